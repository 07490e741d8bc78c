"""The domains and their HTTP controllers: partners, clients, partnerships, identifiers (with
consent, erasure and bulk uploads), rewards and webhooks. ``partners.kit`` is the hashing kit
brands run on their side (it imports nothing of ours)."""
