//! YAML documents as JSON values, read with `yaml-rust2` (a maintained, pure-Rust YAML
//! 1.2 parser; `serde_yaml` is archived).

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Every document of a YAML stream, as JSON values.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    docs.iter().map(to_json).collect()
}

fn to_json(yaml: &Yaml) -> Result<Value, String> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::Real(_) => match yaml.as_f64().and_then(Number::from_f64) {
            Some(n) => Value::Number(n),
            None => return Err(format!("{yaml:?} is not a finite number")),
        },
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (key, value) in hash {
                let key = match key {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(r) => r.clone(),
                    Yaml::Null => "null".to_string(),
                    other => return Err(format!("a mapping key that is not a scalar: {other:?}")),
                };
                map.insert(key, to_json(value)?);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not supported".to_string()),
        Yaml::BadValue => return Err("a value YAML could not read".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_become_json_values() {
        let docs = documents("a: 1\nb: [x, 2.5, true, null]\n---\nc: {d: '010'}\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0],
            serde_json::json!({"a": 1, "b": ["x", 2.5, true, null]})
        );
        assert_eq!(docs[1], serde_json::json!({"c": {"d": "010"}}));
        assert!(documents("a: [").is_err());
    }
}
