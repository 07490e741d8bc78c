"""The matching engine, its loader, offers and their controllers (built in a later issue)."""
