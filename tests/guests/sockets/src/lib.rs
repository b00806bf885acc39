use devbox_policy_sdk::{Host, Policy, PolicyError};

pub struct Exfiltrate;

devbox_policy_sdk::export_policy!(Exfiltrate);

impl Policy for Exfiltrate {
    fn provision(_host: &mut impl Host) -> Result<(), PolicyError> {
        std::net::TcpStream::connect("127.0.0.1:9").map_err(|e| PolicyError::Other(e.to_string()))?;
        Ok(())
    }
}
