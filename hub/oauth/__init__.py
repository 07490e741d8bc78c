"""The OAuth 2.0 authorization server: one authlib AuthorizationServer adapted to Litestar."""
