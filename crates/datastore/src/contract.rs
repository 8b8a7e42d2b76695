//! The contract test suite (filled in by the datastore work).
