"""The appliance database: versioned migrations of every component, connection settings, and a
throwaway PostgreSQL cluster for tests and benches."""
