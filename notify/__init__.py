"""pushtune notification channels."""
