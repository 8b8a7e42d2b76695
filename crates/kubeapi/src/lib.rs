//! A test double of the Kubernetes API server (work in progress, issue 13).
