//! `mqtt://host:port` and `mqtts://host:port` addresses.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an MQTT address; write mqtt://HOST:PORT or mqtts://HOST:PORT")]
pub struct BadMqttUrl(pub String);

impl MqttUrl {
    pub fn parse(s: &str) -> Result<MqttUrl, BadMqttUrl> {
        let bad = || BadMqttUrl(s.to_string());
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(MqttUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            tls,
        })
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_tls_addresses() {
        assert_eq!(
            MqttUrl::parse("mqtts://127.0.0.1:8883").unwrap(),
            MqttUrl {
                host: "127.0.0.1".into(),
                port: 8883,
                tls: true
            }
        );
        assert!(!MqttUrl::parse("mqtt://localhost:1883").unwrap().tls);
    }

    #[test]
    fn refuses_other_schemes_and_missing_ports() {
        assert!(MqttUrl::parse("http://x:1").is_err());
        assert!(MqttUrl::parse("mqtt://x").is_err());
        assert!(MqttUrl::parse("mqtt://:1883").is_err());
    }
}
