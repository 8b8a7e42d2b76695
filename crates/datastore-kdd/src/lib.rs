//! The Kubernetes datastore (KDD): [`gingham_datastore::Datastore`] over the Kubernetes API.
//!
//! Calico's resources are kept as Calico's CRDs (`crd.projectcalico.org/v1`), Calico's Node
//! fields as the Kubernetes Node's annotations, IPAM blocks, handles and affinities as their
//! CRDs; Kubernetes NetworkPolicies, Namespaces, ServiceAccounts and Pods are read directly.
//!
//! Modules:
//! - `crd`: keys and values of the resources kept as CRDs (the generic mapping).
//! - `k8s_backed`: the kinds that live in Kubernetes' own objects (Node annotations,
//!   WorkloadEndpoints from Pods, `knp.`/`kns.`/`ksa.` from NetworkPolicies, Namespaces and
//!   ServiceAccounts).

pub mod crd;
pub mod k8s_backed;
