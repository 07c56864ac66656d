"""What every layer shares: user errors (one line, exit 2) and folder checks."""
