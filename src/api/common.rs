//! Types shared by several kinds: quantities, conditions, references.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The API group of every craftplane kind.
pub const GROUP: &str = "craftplane.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get craftplane` category every kind belongs to.
pub const CATEGORY: &str = "craftplane";

/// A Kubernetes resource quantity (`500m`, `2`, `4Gi`).
///
/// Accepts a YAML/JSON number or string, like core Kubernetes fields do, and is
/// validated by the API server with the CEL quantity library (`isQuantity`),
/// which also rejects negative values.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(pub String);

impl Quantity {
    /// Builds a quantity from its string form (not validated here).
    pub fn new(s: impl Into<String>) -> Self {
        Quantity(s.into())
    }

    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value in base units as a float (`"500m"` → 0.5, `"1Gi"` → 1073741824).
    /// Returns `None` when the string is not a valid quantity.
    pub fn to_f64(&self) -> Option<f64> {
        parse_quantity(&self.0)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(s: &str) -> Self {
        Quantity(s.to_owned())
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            U(u64),
            F(f64),
        }
        Ok(Quantity(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::U(u) => u.to_string(),
            Raw::F(f) => f.to_string(),
        }))
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 64}],
            "x-kubernetes-validations": [{
                "rule": "isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('0')) >= 0",
                "message": "must be a non-negative Kubernetes quantity such as 500m, 2, 4Gi",
                "reason": "FieldValueInvalid"
            }]
        })
    }
}

/// Parses a Kubernetes quantity into base units. Pure; `None` on bad input.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// Schema for a `conditions` list: a map keyed by `type`, so server-side apply
/// merges conditions one by one.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut items = generator.subschema_for::<Condition>();
    items.remove("description");
    json_schema!({
        "description": "Current state in the Kubernetes condition shape (Ready, Reconciling, Stalled, …).",
        "type": "array",
        "items": items,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// A reference to an object-storage location for backups.
///
/// `name` selects a store the cluster admin configured in the operator (bucket,
/// endpoint, credentials Secret); tenants cannot point the operator at
/// arbitrary credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreRef {
    /// Name of a backup store configured by the cluster admin.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Key prefix (e.g. `nightly/`): a relative path of letters, digits,
    /// `-`, `_` and `.`, no segment starting with `.` (no `..`), no empty
    /// segment. In a Tenant's `backupStore`/`allowedBackupStores` it is the
    /// tenant's part of the store; in a snapshot, `spec.backup` or a task
    /// it is a sub-path under the tenant's part and namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        regex(pattern = r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*/)*([A-Za-z0-9_-][A-Za-z0-9_.-]*)?$")
    )]
    pub prefix: Option<String>,
}

/// A reference to an object by name in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("4Gi"), Some(4.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("4GB"), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("Gi"), None);
    }

    #[test]
    fn quantity_accepts_numbers_and_strings() {
        let q: Quantity = serde_json::from_str("2").unwrap();
        assert_eq!(q.as_str(), "2");
        let q: Quantity = serde_json::from_str("\"4Gi\"").unwrap();
        assert_eq!(q.as_str(), "4Gi");
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"4Gi\"");
    }
}
