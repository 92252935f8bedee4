//! Where everything listens: six instances in two zones of three, each
//! with a service, an admin and a gossip port, and the client's own gossip
//! port, all on loopback at fixed offsets from one base port (so a
//! restarted instance comes back at the address the baseline's static list
//! holds).

use std::fmt;
use std::net::{SocketAddr, TcpListener, UdpSocket};

/// The zones, the first being the client's own (its home zone).
pub const ZONES: [&str; 2] = ["zone-a", "zone-b"];

/// The default first port.
pub const DEFAULT_BASE_PORT: u16 = 17100;

/// Instances per zone.
pub const PER_ZONE: usize = 3;

/// One instance's name, zone and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Its index in [`Topology::instances`].
    pub index: usize,
    /// Its name (`a1` .. `b3`), also its membership name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// Where its HTTP service listens.
    pub service: SocketAddr,
    /// Where its admin HTTP endpoint listens (fault injection).
    pub admin: SocketAddr,
    /// Where its membership node gossips (UDP and TCP).
    pub gossip: SocketAddr,
}

/// The whole local cluster's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The six instances, zone by zone.
    pub instances: Vec<InstanceSpec>,
    /// The gossip address of the client's membership node.
    pub client_gossip: SocketAddr,
    /// The client's zone.
    pub home_zone: String,
}

/// A port another process holds.
#[derive(Debug)]
pub struct PortInUse {
    /// The port.
    pub port: u16,
    /// What it was meant for (`service of a1`).
    pub role: String,
    /// The operating system's answer.
    pub error: std::io::Error,
}

impl fmt::Display for PortInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "port {} ({}) is already in use ({}); is another cluster run still going? \
             Stop it, or pick other ports with --base-port",
            self.port, self.role, self.error
        )
    }
}

impl std::error::Error for PortInUse {}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Topology {
    /// The layout from `base`: services at `base..base+6`, admin endpoints
    /// at `base+10..`, gossip at `base+20..`, the client's gossip at
    /// `base+30`.
    pub fn new(base: u16) -> Result<Topology, String> {
        if !(1024..=u16::MAX - 40).contains(&base) {
            return Err(format!("--base-port must be in 1024..={}, not {base}", u16::MAX - 40));
        }
        let mut instances = Vec::new();
        for (z, zone) in ZONES.iter().enumerate() {
            let letter = &zone[zone.len() - 1..];
            for i in 0..PER_ZONE {
                let index = z * PER_ZONE + i;
                let off = index as u16;
                instances.push(InstanceSpec {
                    index,
                    name: format!("{letter}{}", i + 1),
                    zone: (*zone).to_owned(),
                    service: local(base + off),
                    admin: local(base + 10 + off),
                    gossip: local(base + 20 + off),
                });
            }
        }
        Ok(Topology { instances, client_gossip: local(base + 30), home_zone: ZONES[0].to_owned() })
    }

    /// The instance named `name`.
    pub fn find(&self, name: &str) -> Option<&InstanceSpec> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// The instances a script target names: one instance by name, or every
    /// instance of a zone.
    pub fn resolve(&self, target: &str) -> Option<Vec<usize>> {
        if let Some(i) = self.find(target) {
            return Some(vec![i.index]);
        }
        let zone: Vec<usize> = self.instances.iter().filter(|i| i.zone == target).map(|i| i.index).collect();
        (!zone.is_empty()).then_some(zone)
    }

    /// Every name a script may target.
    pub fn target_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.instances.iter().map(|i| i.name.clone()).collect();
        names.extend(ZONES.iter().map(|z| (*z).to_owned()));
        names
    }

    /// Every port with its role.
    pub fn ports(&self) -> Vec<(u16, String, bool)> {
        let mut ports = Vec::new();
        for i in &self.instances {
            ports.push((i.service.port(), format!("service of {}", i.name), false));
            ports.push((i.admin.port(), format!("admin endpoint of {}", i.name), false));
            ports.push((i.gossip.port(), format!("gossip of {}", i.name), true));
        }
        ports.push((self.client_gossip.port(), "gossip of the client".to_owned(), true));
        ports
    }

    /// Checks that every port is free (TCP, and UDP for gossip ports): the
    /// first one taken is an error that names it.
    pub fn check_ports_free(&self) -> Result<(), PortInUse> {
        for (port, role, udp) in self.ports() {
            let err = |error| PortInUse { port, role: role.clone(), error };
            drop(TcpListener::bind(local(port)).map_err(err)?);
            if udp {
                drop(UdpSocket::bind(local(port)).map_err(err)?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_instances_in_two_zones_on_distinct_ports() {
        let t = Topology::new(20000).unwrap();
        assert_eq!(t.instances.len(), 6);
        assert_eq!(t.resolve("zone-a").unwrap(), vec![0, 1, 2]);
        assert_eq!(t.resolve("b2").unwrap(), vec![4]);
        assert!(t.resolve("c1").is_none());
        let mut ports: Vec<u16> = t.ports().iter().map(|p| p.0).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 19);
        assert!(Topology::new(80).is_err());
        assert!(Topology::new(65530).is_err());
    }

    #[test]
    fn a_taken_port_is_named() {
        let t = Topology::new(21000).unwrap();
        let _hold = TcpListener::bind(t.instances[1].admin).unwrap();
        let err = t.check_ports_free().unwrap_err();
        assert_eq!(err.port, 21011);
        assert!(err.to_string().contains("admin endpoint of a2"), "{err}");
        assert!(err.to_string().contains("already in use"), "{err}");
    }
}
