//! ACME HTTP-01 challenge responses, shared between whoever orders certificates
//! (writes) and the plain-HTTP listener (reads `/.well-known/acme-challenge/<token>`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Token -> key authorization. Cloning shares the same store.
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<RwLock<HashMap<String, String>>>);

impl Challenges {
    pub fn insert(&self, token: impl Into<String>, key_authorization: impl Into<String>) {
        if let Ok(mut map) = self.0.write() {
            map.insert(token.into(), key_authorization.into());
        }
    }

    pub fn remove(&self, token: &str) {
        if let Ok(mut map) = self.0.write() {
            map.remove(token);
        }
    }

    pub fn get(&self, token: &str) -> Option<String> {
        self.0.read().ok().and_then(|m| m.get(token).cloned())
    }
}
