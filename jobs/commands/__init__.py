"""CLI commands: each module adds one subcommand and calls one pipeline step."""
