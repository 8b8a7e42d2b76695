//! Errors as kube-apiserver reports them: a `metav1.Status` body with the HTTP code, a reason and
//! a message naming what was wrong.

use serde_json::{Value, json};

use crate::resources::Resource;

/// A failed request.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    fn with_details(mut self, res: &Resource, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": res.plural});
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        self.details = d;
        self
    }

    pub fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .with_details(res, name)
    }

    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .with_details(res, name)
    }

    pub fn conflict(res: &Resource, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.qualified()
            ),
        )
        .with_details(res, name)
    }

    pub fn stale(res: &Resource, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422: `Pod "x" is invalid: metadata.name: Invalid value: ...`.
    pub fn invalid(res: &Resource, name: &str, field: &str, why: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {field}: {why}",
                res.qualified_kind()
            ),
        )
        .with_details(res, name);
        e.details["kind"] = json!(res.kind);
        e.details["causes"] =
            json!([{"reason": "FieldValueInvalid", "message": why, "field": field}]);
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 410 for a watch or list from a compacted resourceVersion.
    pub fn expired(requested: i64, oldest: i64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

impl From<gingham_datastore::Error> for ApiError {
    fn from(e: gingham_datastore::Error) -> Self {
        use gingham_datastore::Error as E;
        match e {
            E::Compacted {
                requested,
                compacted,
            } => Self::expired(requested, compacted),
            E::Unavailable(m) => Self::unavailable(format!("the datastore is unavailable: {m}")),
            other => Self::internal(format!("datastore: {other}")),
        }
    }
}
