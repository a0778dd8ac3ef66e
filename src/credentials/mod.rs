//! Credentials: where secrets come from (Vault / OpenBao, or a local file),
//! how they are cached, and how they are added to requests. (Being built.)
