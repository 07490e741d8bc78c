"""What every domain uses: database, errors, auth guards, pagination, audit. Imports no domain."""
