"""Security plumbing both sides share (OCPP 1.6 Security Whitepaper): keys and certificates,
TLS contexts, and the throwaway setup of run_all.sh --secure."""
