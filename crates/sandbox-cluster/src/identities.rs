//! The identities the cluster hands out: uids, random name suffixes, pod and service IPs.
//! Seeded, so that a sandbox started with `--seed` names things the same way every time.

use std::collections::BTreeSet;

/// The alphabet of `generateName` suffixes and pod-template hashes: no vowels (no words)
/// and no look-alike characters, as in `k8s.io/apimachinery/pkg/util/rand`.
pub const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A source of identities.
#[derive(Debug)]
pub struct Identities {
    rng: fastrand::Rng,
    next_pod_ip: u32,
}

impl Identities {
    /// Identities drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Identities {
            rng: fastrand::Rng::with_seed(seed),
            next_pod_ip: 0,
        }
    }

    /// Moves to another sequence, derived from the current one and `salt`: a cluster restored
    /// from a state file must not hand out again the uids and names of the run that saved
    /// it (with a fixed `--seed` it would replay the same sequence).
    pub fn reseed(&mut self, salt: u64) {
        let seed = self.rng.get_seed() ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.rng = fastrand::Rng::with_seed(seed);
    }

    /// A random (version 4) UUID.
    pub fn uid(&mut self) -> String {
        let mut bytes = self.rng.u128(..).to_be_bytes();
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    /// `length` random characters of [`SAFE_ALPHABET`], as `generateName` appends.
    pub fn suffix(&mut self, length: usize) -> String {
        (0..length)
            .map(|_| char::from(SAFE_ALPHABET[self.rng.usize(..SAFE_ALPHABET.len())]))
            .collect()
    }

    /// A container id: 64 hex digits.
    pub fn container_id(&mut self) -> String {
        (0..4)
            .map(|_| format!("{:016x}", self.rng.u64(..)))
            .collect()
    }

    /// The next pod IP in 10.244.0.0/16 that no pod in `in_use` has (pods restored from a
    /// state file keep theirs).
    pub fn pod_ip(&mut self, in_use: &BTreeSet<String>) -> String {
        // 250 addresses in each of 256 /24s; give up on finding a free one after a lap.
        for _ in 0..250 * 256 {
            // Skip the network and gateway addresses of each /24, like a node's pod CIDR.
            let index = self.next_pod_ip;
            self.next_pod_ip = (self.next_pod_ip + 1) % (250 * 256);
            let third = index / 250;
            let fourth = index % 250 + 2;
            let ip = format!("10.244.{third}.{fourth}");
            if !in_use.contains(&ip) {
                return ip;
            }
        }
        "10.244.255.251".into()
    }

    /// The first free service IP in 10.96.0.0/16 (10.96.0.1 is the `kubernetes` service's).
    pub fn cluster_ip(&mut self, in_use: &BTreeSet<String>) -> String {
        (10..65_534u32)
            .map(|index| format!("10.96.{}.{}", index / 256, index % 256))
            .find(|ip| !in_use.contains(ip) && !ip.ends_with(".0") && !ip.ends_with(".255"))
            .unwrap_or_else(|| "10.96.255.254".into())
    }
}

/// A stable short hash of `text` in [`SAFE_ALPHABET`], as a Deployment names its ReplicaSets
/// (`pod-template-hash`): FNV-1a over the text, its decimal digits mapped to safe characters.
pub fn safe_hash(text: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|digit| char::from(SAFE_ALPHABET[usize::from(digit) % SAFE_ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_reproducible_from_the_seed() {
        let mut one = Identities::new(7);
        let mut two = Identities::new(7);
        assert_eq!(one.uid(), two.uid());
        assert_eq!(one.suffix(5), two.suffix(5));
        let uid = one.uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert!(one.suffix(5).bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        let (mut plain, mut again, mut reseeded) =
            (Identities::new(9), Identities::new(9), Identities::new(9));
        again.reseed(12);
        reseeded.reseed(12);
        let uid = reseeded.uid();
        assert_ne!(plain.uid(), uid, "a reseeded source draws other uids");
        assert_eq!(again.uid(), uid, "the same salt, the same uids");
    }

    #[test]
    fn ips_are_handed_out_in_order_and_skip_those_in_use() {
        let mut identities = Identities::new(1);
        let taken = BTreeSet::from(["10.244.0.3".to_string()]);
        assert_eq!(identities.pod_ip(&taken), "10.244.0.2");
        assert_eq!(identities.pod_ip(&taken), "10.244.0.4");
        let in_use = BTreeSet::from(["10.96.0.10".to_string()]);
        assert_eq!(identities.cluster_ip(&in_use), "10.96.0.11");
    }

    #[test]
    fn hashes_are_stable_and_safe() {
        assert_eq!(safe_hash("template"), safe_hash("template"));
        assert_ne!(safe_hash("template"), safe_hash("template2"));
        assert!(safe_hash("x").bytes().all(|b| SAFE_ALPHABET.contains(&b)));
    }
}
