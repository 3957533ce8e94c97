"""HTTP serving: the gateway process that holds the actors' ports (docs/http.md)."""
