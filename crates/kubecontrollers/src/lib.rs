//! calico-kube-controllers for Gingham (work in progress, issue 13).
