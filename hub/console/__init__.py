"""The admin console at /admin: server-rendered pages for coalition admins."""
