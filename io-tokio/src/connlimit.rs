//! Connection limits before trust (Consul's `limits {
//! rpc_max_conns_per_client http_max_conns_per_client }`, enforced in its
//! agent/consul/rpc.go `handleConn` and the HTTP server with
//! hashicorp/go-connlimit): connections are counted per source IP the
//! moment they are accepted, before a byte is read, and one over the limit
//! is closed at once, with one rate-limited log line.

/// Consul's defaults (agent/config/default.go).
pub const DEFAULT_RPC_MAX_CONNS_PER_CLIENT: usize = 100;
pub const DEFAULT_HTTP_MAX_CONNS_PER_CLIENT: usize = 200;

/// The agent's limits; 0 means no limit, as in Consul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    pub rpc_max_conns_per_client: usize,
    pub http_max_conns_per_client: usize,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            rpc_max_conns_per_client: DEFAULT_RPC_MAX_CONNS_PER_CLIENT,
            http_max_conns_per_client: DEFAULT_HTTP_MAX_CONNS_PER_CLIENT,
        }
    }
}
