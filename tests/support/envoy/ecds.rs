//! Delivering the plugin through ECDS as Istio does: the resource file Envoy watches,
//! written when Envoy starts and replaced by [`Envoy::push`] with each new version, and
//! the configuration as Istio renders a `WasmPlugin`'s (`istio_json`).

use std::fs;

use super::super::wait_for;
use super::config::{Delivery, EnvoyConfig};
use super::process::{Envoy, START_TIMEOUT};

/// The ECDS resource file's name in its watched directory.
pub(super) const ECDS_FILE: &str = "plugin.yaml";

pub use traffic_mirror_core::istio::istio_json;

impl EnvoyConfig {
    /// The ECDS resource file holding `plugin` as version `version`.
    pub fn ecds_resource(&self, plugin: &str, version: u32) -> String {
        format!(
            r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig
  name: {name}
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
{config}"#,
            name = self.filter_name(),
            config = self.wasm_config(plugin, 6),
        )
    }
}

impl Envoy {
    /// Delivers a new plugin configuration through ECDS (a new resource file moved
    /// into the watched directory, as a new version) and waits until Envoy has applied
    /// or rejected it; returns whether it was applied.
    pub fn push(&mut self, plugin: &str) -> bool {
        assert!(
            self.config.delivery != Delivery::Inline,
            "push needs a plugin delivered through ECDS"
        );
        let prefix = format!(
            "extension_config_discovery.http_filter.{}.",
            self.config.filter_name()
        );
        let counts = |envoy: &Envoy| {
            let stats = envoy.stats();
            let get = |name: &str| stats.get(&format!("{prefix}{name}")).copied().unwrap_or(0);
            (get("update_success"), get("update_rejected"))
        };
        let (reloads, rejects) = counts(self);
        self.ecds_version += 1;
        let staged = self
            .dir
            .path()
            .join(format!("staged-{}.yaml", self.ecds_version));
        fs::write(
            &staged,
            self.config.ecds_resource(plugin, self.ecds_version),
        )
        .unwrap();
        fs::rename(&staged, self.dir.path().join("ecds").join(ECDS_FILE)).unwrap();
        wait_for(
            START_TIMEOUT,
            "Envoy to apply or reject the new configuration",
            || {
                let now = counts(self);
                if now.0 > reloads {
                    Ok(true)
                } else if now.1 > rejects {
                    Ok(false)
                } else {
                    Err(format!(
                        "{prefix}update_success and update_rejected still {now:?}"
                    ))
                }
            },
        )
    }
}
