//! `lanes`: sticky release lanes, checked and compiled.

use serde_json::Value;

use super::fields::*;
use super::parse_target::parse_sample_key;
use super::{error, Result};
use crate::lanes::{LaneOnMissingKey, Lanes, MAX_SPLIT};
use crate::sampling::{scaled, threshold, SampleKey, BUCKETS};

pub(super) const LANES_FIELDS: &[&str] = &[
    "header",
    "sample_by",
    "salt",
    "split",
    "default",
    "on_missing_key",
    "keep_incoming",
];

pub(super) const SPLIT_FIELDS: &[&str] = &["lane", "percent"];

pub(super) fn parse_lanes(path: &str, value: &Value, loop_header: &str) -> Result<Lanes> {
    let mut fields = Fields::new(value, path, &format!("{path}."), LANES_FIELDS)?;

    let (p, v) = fields.required("header")?;
    let header = header_name(&p, v)?;
    if is_reserved(&header) {
        return error(
            &p,
            format!("header \"{header}\" is reserved and cannot be the lane header"),
        );
    }
    if header == loop_header {
        return error(
            &p,
            format!("header \"{header}\" is the loop_header and cannot be the lane header"),
        );
    }

    let (p, v) = fields.required("sample_by")?;
    let sample_by = parse_sample_key(&p, v)?;
    if sample_by == SampleKey::Random {
        return error(
            &p,
            "must be a header, cookie or query parameter: a random lane would not keep its users",
        );
    }

    let (p, v) = fields.required("salt")?;
    let salt = string(&p, v)?.into_bytes();

    let (p, v) = fields.required("split")?;
    let split = array(&p, v)?;
    if split.is_empty() || split.len() > MAX_SPLIT {
        return error(
            &p,
            format!("must hold 1 to {MAX_SPLIT} lanes, got {}", split.len()),
        );
    }
    let mut names: Vec<String> = Vec::with_capacity(split.len() + 1);
    let mut ends: Vec<u32> = Vec::with_capacity(split.len());
    let mut total = 0.0f64;
    for (i, item) in split.iter().enumerate() {
        let ip = format!("{p}[{i}]");
        let mut lane = Fields::new(item, &ip, &format!("{ip}."), SPLIT_FIELDS)?;
        let (np, nv) = lane.required("lane")?;
        let name = name(&np, nv)?;
        if names.contains(&name) {
            return error(&np, format!("duplicate lane name \"{name}\""));
        }
        let (pp, pv) = lane.required("percent")?;
        let percent = number(&pp, pv)?;
        if !(0.0..=100.0).contains(&percent) {
            return error(&pp, format!("must be between 0 and 100, got {}", show(pv)));
        }
        total += percent;
        let end = threshold(total);
        if scaled(total) > BUCKETS as f64 {
            return error(
                &pp,
                format!(
                    "the split's percents add up to {} here, more than 100",
                    show(&Value::from(total))
                ),
            );
        }
        names.push(name);
        ends.push(end);
    }

    let default = match fields.optional("default") {
        None | Some((_, Value::Null)) => None,
        Some((p, v)) => {
            let name = name(&p, v)?;
            if names.contains(&name) {
                return error(
                    &p,
                    format!("lane \"{name}\" is already in split (the default lane takes every other user)"),
                );
            }
            names.push(name);
            Some(names.len() - 1)
        }
    };

    let on_missing_key = match fields.optional("on_missing_key") {
        None => LaneOnMissingKey::Default,
        Some((p, v)) => one_of(
            &p,
            v,
            &[
                ("default", LaneOnMissingKey::Default),
                ("random", LaneOnMissingKey::Random),
            ],
        )?,
    };

    let keep_incoming = match fields.optional("keep_incoming") {
        None => false,
        Some((_, Value::Bool(keep))) => *keep,
        Some((p, other)) => return error(&p, format!("expected a boolean, got {}", kind(other))),
    };
    Ok(Lanes {
        header,
        sample_by,
        salt,
        names,
        ends,
        default,
        on_missing_key,
        keep_incoming,
    })
}
