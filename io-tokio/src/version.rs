//! The one place the binary's versions come from, so `tern version`,
//! `/v1/agent/self` (`Config.Version`, `Config.Revision`) and the `build`
//! gossip tag (the `Build` column of `tern members`) always agree.

/// Tern's own version (the crate's).
pub const TERN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Consul version this server answers like, for clients that gate
/// features on `Config.Version` (py-consul targets Consul 1.20–1.22).
pub const CONSUL_COMPATIBLE_VERSION: &str = "1.21.0";

/// What Consul reports as its git commit (`Config.Revision`): ours names the
/// Tern build instead.
pub const REVISION: &str = concat!("tern-", env!("CARGO_PKG_VERSION"));

/// `Config.BuildDate` and `tern version`'s "Build Date": the build carries no
/// date, so this is a fixed placeholder in Consul's RFC 3339 form.
pub const BUILD_DATE: &str = "1970-01-01T00:00:01Z";

/// Consul's RPC protocol numbers (`consul.DefaultRPCProtocol`,
/// `ProtocolVersionMin`, `ProtocolVersionMax`), which the `vsn`, `vsn_min`
/// and `vsn_max` tags carry.
pub const RPC_PROTOCOL_DEFAULT: u8 = 2;
pub const RPC_PROTOCOL_MIN: u8 = 2;
pub const RPC_PROTOCOL_MAX: u8 = 3;

/// The `build` tag: `<consul version>:<revision>`, as Consul's
/// `version:commit`; `tern members` shows the part before the colon.
pub fn build_tag() -> String {
    format!("{CONSUL_COMPATIBLE_VERSION}:{REVISION}")
}

/// `tern version`'s text, in the shape of Consul's `prettyFormatter`
/// (command/version/formatter.go): the first line names Tern and the
/// Consul version it is compatible with.
pub fn pretty() -> String {
    format!(
        "Tern v{TERN_VERSION} (Consul v{CONSUL_COMPATIBLE_VERSION} compatible)\n\
         Revision {REVISION}\n\
         Build Date {BUILD_DATE}\n\
         Protocol {RPC_PROTOCOL_DEFAULT} spoken by default, understands {RPC_PROTOCOL_MIN} to {RPC_PROTOCOL_MAX} \
         (agent will automatically use protocol >{RPC_PROTOCOL_DEFAULT} when speaking to compatible agents)\n"
    )
}

/// `tern version -format=json`: Consul's `VersionInfo` fields (Version is
/// the Consul-compatible one, as `/v1/agent/self` says) plus `Tern`.
pub fn json() -> String {
    let info = serde_json::json!({
        "Version": CONSUL_COMPATIBLE_VERSION,
        "Revision": REVISION,
        "Prerelease": "",
        "BuildDate": BUILD_DATE,
        "RPC": {
            "Default": RPC_PROTOCOL_DEFAULT,
            "Min": RPC_PROTOCOL_MIN,
            "Max": RPC_PROTOCOL_MAX,
        },
        "Tern": TERN_VERSION,
    });
    // Go's MarshalIndent with three spaces, as Consul's jsonFormatter.
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&info, &mut ser).expect("a JSON value serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_tag_is_the_consul_version_then_the_revision() {
        assert_eq!(build_tag(), format!("1.21.0:tern-{TERN_VERSION}"));
    }

    #[test]
    fn pretty_has_consuls_four_lines() {
        let text = pretty();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            format!("Tern v{TERN_VERSION} (Consul v1.21.0 compatible)")
        );
        assert!(lines[3].starts_with("Protocol 2 spoken by default, understands 2 to 3"));
    }
}
