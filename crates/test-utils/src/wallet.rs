//! A real secp256k1 wallet for tests: EIP-55 address, EIP-191 `personal_sign`, and EIP-4361
//! (Sign-In with Ethereum) message text.

/// anvil's well-known dev keys #0 and #1 (public test keys; never hold value).
pub const DEV_KEY_0: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub const DEV_KEY_1: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// The client's wallet, with test-friendly signatures (a bad key panics).
#[derive(Debug, Clone)]
pub struct Wallet(erigolem_client::Wallet);

impl Wallet {
    pub fn from_hex(hex_key: &str) -> Self {
        Self(erigolem_client::Wallet::from_hex(hex_key).unwrap())
    }

    /// The EIP-55 checksummed address.
    pub fn address(&self) -> String {
        self.0.address()
    }

    /// EIP-191 `personal_sign`, 0x-prefixed hex.
    pub fn personal_sign(&self, message: &str) -> String {
        self.0.personal_sign(message).unwrap()
    }
}

/// The fields of a Sign-In with Ethereum message.
#[derive(Debug, Clone)]
pub struct SiweMessage {
    pub domain: String,
    pub address: String,
    pub uri: String,
    pub chain_id: u64,
    pub nonce: String,
    /// RFC 3339.
    pub issued_at: String,
    pub expiration_time: Option<String>,
}

impl SiweMessage {
    /// The EIP-4361 text.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{domain} wants you to sign in with your Ethereum account:\n{address}\n\nSign in to Erigolem.\n\nURI: {uri}\nVersion: 1\nChain ID: {chain}\nNonce: {nonce}\nIssued At: {issued}",
            domain = self.domain,
            address = self.address,
            uri = self.uri,
            chain = self.chain_id,
            nonce = self.nonce,
            issued = self.issued_at
        );
        if let Some(exp) = &self.expiration_time {
            s.push_str(&format!("\nExpiration Time: {exp}"));
        }
        s
    }
}

/// RFC 3339 (UTC, seconds) for `now + offset_secs`.
pub fn rfc3339_from_now(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = time::OffsetDateTime::from_unix_timestamp(now + offset_secs).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_key_addresses() {
        assert_eq!(
            Wallet::from_hex(DEV_KEY_0).address(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert_eq!(
            Wallet::from_hex(DEV_KEY_1).address(),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
    }
}
