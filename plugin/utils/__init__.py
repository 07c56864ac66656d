"""What every layer shares: user errors (one line, exit 2), folder checks, importing the user's own functions."""
