//! Keys and values of the resources kept as CRDs (`crd.projectcalico.org/v1`).
