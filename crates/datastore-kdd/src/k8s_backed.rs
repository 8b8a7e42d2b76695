//! The kinds that live in Kubernetes' own objects: Calico Node fields as Node annotations, WorkloadEndpoints from Pods, and the read-only `knp.`/`kns.`/`ksa.` resources.
