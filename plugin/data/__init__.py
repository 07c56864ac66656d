"""Training rows: loading local files and hub datasets, chat / alpaca / text formats, labels (which tokens train),
classification rows, the benchmark samples, and --preview-data."""
