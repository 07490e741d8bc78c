"""Domain services and HTTP controllers: partners, clients, partnerships (and later identifiers,
consent, rewards). ``partners.kit`` is the hashing kit brands run on their side."""
