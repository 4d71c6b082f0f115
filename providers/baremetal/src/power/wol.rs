//! Wake-on-LAN: a magic packet (six `0xff`, then the MAC sixteen times)
//! broadcast over UDP. It can only switch a host on and cannot tell
//! whether it is on; the host answering over SSH says that.

use std::net::SocketAddr;

use super::{PowerControl, PowerError, PowerState};

/// A host woken by its network card.
pub struct WakeOnLan {
    /// The card's MAC address.
    pub mac: [u8; 6],
    /// Where the packet goes: the host's subnet broadcast, port 9.
    pub target: SocketAddr,
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`) as bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

/// The 102-byte magic packet for `mac`.
pub fn magic_packet(mac: [u8; 6]) -> Vec<u8> {
    let mut packet = vec![0xff; 6];
    for _ in 0..16 {
        packet.extend_from_slice(&mac);
    }
    packet
}

#[async_trait::async_trait]
impl PowerControl for WakeOnLan {
    fn driver(&self) -> &'static str {
        "wol"
    }

    async fn state(&self) -> Result<Option<PowerState>, PowerError> {
        Ok(None)
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        let bind: SocketAddr = if self.target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| PowerError::Unreachable(format!("cannot open a UDP socket: {e}")))?;
        socket
            .set_broadcast(true)
            .map_err(|e| PowerError::Unreachable(format!("cannot broadcast: {e}")))?;
        let packet = magic_packet(self.mac);
        // UDP may drop one; cards wake on the first that arrives.
        for _ in 0..3 {
            socket
                .send_to(&packet, self.target)
                .await
                .map_err(|e| PowerError::Unreachable(format!("{}: {e}", self.target)))?;
        }
        Ok(())
    }

    async fn power_off(&self) -> Result<(), PowerError> {
        Err(PowerError::Unsupported(
            "Wake-on-LAN cannot switch a host off".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_the_packet_repeats_it_sixteen_times() {
        let mac = parse_mac("52:54:00:ab:CD:0f").expect("mac");
        assert_eq!(mac, [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
        assert_eq!(parse_mac("52-54-00-ab-cd-0f"), Some(mac));
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:0g"), None);
        let p = magic_packet(mac);
        assert_eq!(p.len(), 102);
        assert_eq!(&p[..6], &[0xff; 6]);
        assert!(p[6..].chunks(6).all(|c| c == mac));
    }
}
