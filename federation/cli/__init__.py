"""The command line, `federation COMMAND ...`: a command table over the node and the service."""
