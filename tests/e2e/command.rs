//! The `traffic-mirror` command agrees with the module in a real Envoy: `sample` names
//! exactly the keys whose requests reached the mirror, and the lane each of ten thousand
//! users' requests was routed to; `explain --json` gives, request by request, the
//! decision the module made (copies at each target's mirror, the lane on the request),
//! reasons that add up to the module's own counters, and buckets and thresholds that the
//! normative rule, computed here on its own, gives.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use xxhash_rust::xxh64::xxh64;

use crate::lanes::{send_spread, Versions};
use crate::sampling::keys;
use crate::support::command::traffic_mirror;
use crate::support::envoy::WorkDir;
use crate::support::{Envoy, EnvoyConfig, Request, Upstream};
use crate::{send_all, wait_settled};

const KEYS: usize = 10_000;

/// The plugin configuration in a file of its own, for the command.
fn plugin_file(dir: &WorkDir, plugin: &Value) -> String {
    let path = dir.path().join("plugin.json");
    std::fs::write(&path, plugin.to_string()).unwrap();
    path.display().to_string()
}

fn stdin_of(keys: &[String]) -> Vec<u8> {
    let mut text = keys.join("\n");
    text.push('\n');
    text.into_bytes()
}

#[test]
fn sample_names_exactly_the_keys_whose_requests_reached_the_mirror() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    let plugin = json!({"targets": [{"name": "agree", "cluster": "mirror", "percent": 30,
                                     "sample_by": {"header": "x-user-id"}, "salt": "agreement"}]});
    let envoy = Envoy::start(
        EnvoyConfig::new(&plugin.to_string(), primary.addr(), mirror.addr()).concurrency(2),
    );
    let keys = keys(KEYS);
    let requests: Vec<Request> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| Request::get(&format!("/agree/{i}")).header("x-user-id", key))
        .collect();
    send_all(envoy.listener(), &requests, 4, 4);
    let stats = wait_settled(&envoy, "agree");
    let at_mirror: BTreeSet<Vec<u8>> = mirror
        .received()
        .iter()
        .map(|copy| copy.header("x-user-id").unwrap().to_vec())
        .collect();
    assert_eq!(at_mirror.len() as u64, stats["dispatched"]);

    let dir = WorkDir::new("sample");
    let out = traffic_mirror(&["sample", &plugin_file(&dir, &plugin)], &stdin_of(&keys));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sampled: BTreeSet<Vec<u8>> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let only_module: Vec<_> = at_mirror.difference(&sampled).take(5).collect();
    let only_command: Vec<_> = sampled.difference(&at_mirror).take(5).collect();
    assert!(
        only_module.is_empty() && only_command.is_empty(),
        "mirrored by the module only: {only_module:?}; named by the command only: {only_command:?}"
    );
    assert!(
        (2_700..3_300).contains(&sampled.len()),
        "{} of {KEYS}",
        sampled.len()
    );
}

#[test]
fn sample_lanes_names_the_lane_each_users_requests_were_routed_to() {
    let versions = Versions::start();
    let plugin = json!({"lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"},
        "salt": "agreement", "split": [{"lane": "canary", "percent": 5}, {"lane": "beta", "percent": 10}],
        "default": "stable"}});
    let unused = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let envoy = Envoy::start(versions.envoy(&plugin.to_string(), unused).concurrency(2));
    let keys = keys(KEYS);
    let requests: Vec<Request> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| Request::get(&format!("/lanes/{i}")).header("x-user-id", key))
        .collect();
    send_spread(envoy.listener(), &requests, 4, 4);
    let arrivals = versions.arrivals();

    let dir = WorkDir::new("sample-lanes");
    let out = traffic_mirror(
        &["sample", &plugin_file(&dir, &plugin), "--lanes"],
        &stdin_of(&keys),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), KEYS);
    let mut per_lane: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (key, line)) in keys.iter().zip(&lines).enumerate() {
        let (named_key, lane) = line.split_once('\t').unwrap();
        assert_eq!(named_key, key);
        let (version, header) = &arrivals[&format!("/lanes/{i}")];
        assert_eq!(
            (version.as_str(), header.as_deref()),
            (lane, Some(lane)),
            "user {key:?}: routed to {version}, the command says {lane}"
        );
        *per_lane.entry(lane.to_string()).or_default() += 1;
    }
    assert!((400..600).contains(&per_lane["canary"]), "{per_lane:?}");
}

/// The normative rule, on its own.
fn bucket(salt: &str, key: &str) -> u64 {
    xxh64(format!("{salt}:{key}").as_bytes(), 0) % 1_000_000
}

#[test]
fn explain_agrees_with_the_module_request_by_request() {
    let primary = Upstream::start("primary");
    let mirrors: Vec<Upstream> = ["by-header", "by-cookie", "by-query", "canary-lane"]
        .iter()
        .map(|name| Upstream::start(name))
        .collect();
    let plugin = json!({
        "lanes": {"header": "x-lane", "sample_by": {"header": "x-user-id"}, "salt": "explain",
                  "split": [{"lane": "canary", "percent": 20}], "default": "stable"},
        "targets": [
            {"name": "by-header", "cluster": "by-header", "percent": 40,
             "sample_by": {"header": "x-user-id"}, "match": {"path_prefix": "/api/"}},
            {"name": "by-cookie", "cluster": "by-cookie", "percent": 60, "salt": "cookies",
             "sample_by": {"cookie": "sid"}, "match": {"methods": ["GET", "POST"]}},
            {"name": "by-query", "cluster": "by-query", "percent": 50.5,
             "sample_by": {"query": "uid"},
             "match": {"hosts": ["*.example.com"], "exclude_path_prefixes": ["/api/health"]}},
            {"name": "canary-lane", "cluster": "canary-lane", "percent": 100,
             "sample_by": {"header": "x-user-id"}, "match": {"headers": {"x-lane": "canary"}}}
        ]
    });
    let mut config = EnvoyConfig::new(&plugin.to_string(), primary.addr(), mirrors[0].addr());
    for mirror in &mirrors {
        config = config.cluster(mirror.name(), mirror.addr());
    }
    let envoy = Envoy::start(config);
    let dir = WorkDir::new("explain");
    let file = plugin_file(&dir, &plugin);

    // Requests of every shape: paths in and out of /api/, excluded ones, methods, hosts,
    // keys present or not, and a few carrying the loop header.
    let mut explained = Vec::new();
    for i in 0..80usize {
        let path = match i % 4 {
            0 => format!("/api/items/{i}?uid=q{i}"),
            1 => format!("/api/health?uid=q{i}"),
            2 => format!("/shop/{i}"),
            _ => format!("/api/orders?x=1&uid=q{i}"),
        };
        let method = ["GET", "POST", "PUT"][i % 3];
        let authority =
            ["shop.example.com", "example.com", "a.b.example.com:8080"][i % 3 / 2 + i % 2];
        let mut headers = vec![("x-case".to_string(), i.to_string())];
        if i % 7 != 0 {
            headers.push(("x-user-id".to_string(), format!("user-{i}")));
        }
        if i % 5 != 0 {
            headers.push(("cookie".to_string(), format!("a=1; sid=s{i}")));
        }
        if i % 13 == 6 {
            headers.push(("x-traffic-mirror".to_string(), "elsewhere".to_string()));
        }
        let mut request = Request::new(method, &path).host(authority);
        let mut args: Vec<String> = [
            "explain",
            file.as_str(),
            "--json",
            "--method",
            method,
            "--path",
            &path,
            "--authority",
            authority,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (name, value) in &headers {
            request = request.header(name, value);
            args.push("-H".to_string());
            args.push(format!("{name}: {value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = traffic_mirror(&args, b"");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        send_all(envoy.listener(), &[request], 1, 1);
        explained.push((i, headers, path, answer));
    }
    let thresholds = [400_000, 600_000, 505_000, 1_000_000];
    let salts = ["by-header", "cookies", "by-query", "canary-lane"];
    let primary_seen: BTreeMap<String, Option<String>> = primary
        .received()
        .iter()
        .map(|r| (r.header_str("x-case").unwrap(), r.header_str("x-lane")))
        .collect();
    for (t, mirror) in mirrors.iter().enumerate() {
        let name = mirror.name();
        let stats = wait_settled(&envoy, name);
        let copied: BTreeSet<String> = mirror
            .received()
            .iter()
            .map(|c| c.header_str("x-case").unwrap())
            .collect();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for (i, headers, path, answer) in &explained {
            let verdict = &answer["targets"][t];
            assert_eq!(verdict["name"], *name);
            assert_eq!(verdict["threshold"], thresholds[t], "{name}");
            let reason = verdict["reason"].as_str().unwrap();
            *reasons.entry(reason.to_string()).or_default() += 1;
            assert_eq!(
                verdict["mirrored"],
                json!(copied.contains(&i.to_string())),
                "request {i} to {name}: explain says {verdict}"
            );
            // A keyed decision names the key's bucket, as the rule computes it.
            let header = |n: &str| headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
            let key = match t {
                0 | 3 => header("x-user-id"),
                1 => header("cookie").map(|c| c.split("sid=").nth(1).unwrap().to_string()),
                _ => path.split("uid=").nth(1).map(str::to_string),
            };
            if matches!(reason, "sampled" | "not_sampled") {
                let expected = bucket(salts[t], key.as_deref().unwrap());
                assert_eq!(verdict["bucket"], expected, "request {i} to {name}");
                assert_eq!(
                    reason == "sampled",
                    expected < thresholds[t],
                    "request {i} to {name}"
                );
            } else {
                assert_eq!(verdict["bucket"], Value::Null, "request {i} to {name}");
            }
        }
        // The reasons add up to the module's own counters for this target.
        let count = |r: &str| reasons.get(r).copied().unwrap_or(0);
        assert_eq!(stats["skipped_loop"], count("loop"), "{name}: {reasons:?}");
        assert_eq!(
            stats["skipped_missing_key"],
            count("missing_key"),
            "{name}: {reasons:?}"
        );
        assert_eq!(
            stats["requests"],
            count("sampled") + count("not_sampled") + count("missing_key"),
            "{name}: {reasons:?}"
        );
        assert_eq!(stats["sampled"], count("sampled"), "{name}: {reasons:?}");
        assert!(
            count("sampled") > 0 && count("not_sampled") + count("no_match") > 0,
            "{name}: {reasons:?}"
        );
    }
    // And the lane the command gives is the one the primary saw.
    for (i, _, _, answer) in &explained {
        assert_eq!(
            answer["lane"].as_str(),
            primary_seen[&i.to_string()].as_deref(),
            "request {i}"
        );
    }
}
