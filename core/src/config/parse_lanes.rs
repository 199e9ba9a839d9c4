//! `lanes`: sticky release lanes, checked and compiled.

use serde_json::Value;

use super::fields::*;
use super::parse_target::parse_sample_key;
use super::{error, Result};
use crate::lanes::{Assign, LaneOnMissingKey, Lanes, Mode, BAGGAGE, MAX_FOLLOW, MAX_SPLIT};
use crate::sampling::{scaled, threshold, SampleKey, BUCKETS};

pub(super) const LANES_FIELDS: &[&str] = &[
    "header",
    "sample_by",
    "salt",
    "split",
    "default",
    "on_missing_key",
    "keep_incoming",
    "baggage",
    "follow",
];

/// The fields that assign lanes: none of them goes with `follow`.
const ASSIGN_FIELDS: [&str; 6] = [
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

    if header == BAGGAGE {
        return error(
            &p,
            "\"baggage\" carries the lane across services and cannot be the lane header",
        );
    }

    let baggage = match fields.optional("baggage") {
        None => None,
        Some((p, v)) => {
            let key = string(&p, v)?;
            if key.is_empty() || key.len() > 64 || !key.bytes().all(is_token_byte) {
                return error(
                    &p,
                    format!(
                        "must be a baggage key (1 to 64 token characters), got \"{}\"",
                        key.escape_debug()
                    ),
                );
            }
            Some(key)
        }
    };

    if let Some((p, v)) = fields.optional("follow") {
        for assigning in ASSIGN_FIELDS {
            if let Some((ap, _)) = fields.optional(assigning) {
                return error(
                    &ap,
                    "not allowed beside follow: a hop follows the lane in baggage and assigns none",
                );
            }
        }
        let list = array(&p, v)?;
        if list.is_empty() || list.len() > MAX_FOLLOW {
            return error(
                &p,
                format!("must hold 1 to {MAX_FOLLOW} lanes, got {}", list.len()),
            );
        }
        let mut names: Vec<String> = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let name = name(&ip, item)?;
            if names.contains(&name) {
                return error(&ip, format!("duplicate lane name \"{name}\""));
            }
            names.push(name);
        }
        if baggage.is_none() {
            return error(
                &format!("{path}.baggage"),
                "required with follow: the baggage key the lane is read from, e.g. \"lane\"",
            );
        }
        return Ok(Lanes {
            header,
            baggage,
            names,
            mode: Mode::Follow,
        });
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
        baggage,
        names,
        mode: Mode::Assign(Assign {
            sample_by,
            salt,
            ends,
            default,
            on_missing_key,
            keep_incoming,
        }),
    })
}
