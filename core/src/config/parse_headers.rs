//! A target's `headers`: what is removed, set and redacted on the copy.

use serde_json::Value;

use super::fields::*;
use super::{error, HeaderOps, Result};

pub(super) const HEADER_OPS_FIELDS: &[&str] = &["remove", "set", "redact"];

pub(super) fn parse_header_ops(path: &str, value: &Value) -> Result<HeaderOps> {
    let mut fields = Fields::new(value, path, &format!("{path}."), HEADER_OPS_FIELDS)?;
    let mut ops = HeaderOps::default();
    // Every name, with the path where it was given, to refuse one named twice.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut note = |p: &str, name: &str| -> Result<()> {
        forbid_reserved(p, name)?;
        if let Some((first, _)) = seen
            .iter()
            .find(|(_, n)| n == name)
            .map(|(fp, n)| (fp.clone(), n))
        {
            return error(p, format!("header \"{name}\" is already named at {first}"));
        }
        seen.push((p.to_string(), name.to_string()));
        Ok(())
    };
    if let Some((p, v)) = fields.optional("remove") {
        for (i, item) in array(&p, v)?.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let name = header_name(&ip, item)?;
            note(&ip, &name)?;
            ops.remove.push(name);
        }
    }
    if let Some((p, v)) = fields.optional("set") {
        for (name, item) in object(&p, v)? {
            let ip = member(&p, name);
            let lower = checked_header_name(&ip, name)?;
            note(&ip, &lower)?;
            let value = string(&ip, item)?;
            if !valid_header_value(&value) {
                return error(&ip, "value must not contain control characters");
            }
            ops.set.push((lower, value));
        }
    }
    if let Some((p, v)) = fields.optional("redact") {
        for (i, item) in array(&p, v)?.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let name = header_name(&ip, item)?;
            note(&ip, &name)?;
            ops.redact.push(name);
        }
    }
    Ok(ops)
}
