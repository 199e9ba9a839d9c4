//! How Istio hands a `WasmPlugin`'s `pluginConfig` to the filter: istiod turns it into a
//! protobuf `Struct` (every number a double) and renders it as JSON the way Go's encoder
//! does. The command renders `WasmPlugin`s this way, and the end-to-end tests deliver
//! configurations this way, so both see what a proxy in the mesh sees.

use serde_json::Value;

/// A plugin configuration as Istio hands `pluginConfig` to the filter: a protobuf
/// `Struct` (every number a double) as compact JSON with sorted keys, integral numbers
/// without a fraction, and `<`, `>`, `&`, U+2028, U+2029 escaped as Go's encoder does.
pub fn istio_json(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 && x.abs() < 1e21 {
                format!("{x:.0}")
            } else {
                serde_json::Number::from_f64(x)
                    .map_or_else(|| "null".to_string(), |n| n.to_string())
            }
        }
        Value::String(s) => go_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(istio_json).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let members: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", go_string(k), istio_json(&map[k])))
                .collect();
            format!("{{{}}}", members.join(","))
        }
    }
}

fn go_string(text: &str) -> String {
    serde_json::to_string(text)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn rendered_compact_sorted_with_integral_doubles_and_html_escapes() {
        let value = serde_json::json!({"z": [true, null, "a<b>&c\u{2028}"], "b": 0.5, "a": 10.0, "n": 1048576});
        assert_eq!(
            istio_json(&value),
            r#"{"a":10,"b":0.5,"n":1048576,"z":[true,null,"a\u003cb\u003e\u0026c\u2028"]}"#
        );
    }
}
