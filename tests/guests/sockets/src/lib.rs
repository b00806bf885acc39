use devbox_policy_sdk::{Host, Plan, Policy, PolicyError, RunContext};

pub struct Exfiltrate;

devbox_policy_sdk::export_policy!(Exfiltrate);

impl Policy for Exfiltrate {
    fn provision(_host: &mut impl Host, _context: &RunContext) -> Result<Plan, PolicyError> {
        std::net::TcpStream::connect("127.0.0.1:9").map_err(|e| PolicyError::Other(e.to_string()))?;
        Err(PolicyError::Other("unreachable: the host refuses this component at load".into()))
    }
}
