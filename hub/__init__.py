"""Coalition hub: the service shell (app factory, settings, OAuth server, CLI)."""
