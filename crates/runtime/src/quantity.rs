//! Kubernetes quantities as our providerConfigs take them: whole numbers with a binary
//! suffix for memory and sizes (`320Mi`, `100Gi`), whole cores or millicores for CPU (`1`,
//! `250m`). One type for all of them: it keeps the text the owner wrote (so manifests show
//! what they asked for) and compares by value.

use std::cmp::Ordering;

/// A validated quantity: the owner's text and its value in milli-units (of bytes or cores).
#[derive(Clone, Debug)]
pub struct Quantity {
    text: String,
    milli: u128,
}

/// Binary suffixes and their shifts: what memory is sized in.
const BINARY: [(&str, u32); 4] = [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40)];
/// At most nine digits: no overflow anywhere, and more than any node has.
const MAX_DIGITS: usize = 9;

impl Quantity {
    /// A memory quantity or size: `<digits><Ki|Mi|Gi|Ti>` (trimmed).
    pub fn memory(text: &str) -> Option<Self> {
        let text = text.trim();
        let (digits, suffix) = split(text);
        let shift = BINARY.iter().find(|(s, _)| *s == suffix)?.1;
        let n = number(digits)?;
        Some(Quantity {
            text: text.into(),
            milli: (n * 1000) << shift,
        })
    }

    /// A CPU quantity: `<digits>` cores or `<digits>m` millicores (trimmed).
    pub fn cpu(text: &str) -> Option<Self> {
        let text = text.trim();
        let (n, milli) = match text.strip_suffix('m') {
            Some(digits) => (number(digits)?, 1),
            None => (number(text)?, 1000),
        };
        Some(Quantity {
            text: text.into(),
            milli: n * milli,
        })
    }

    /// The text as the owner wrote it (trimmed), e.g. `320Mi`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Bytes of a memory quantity; None beyond 16 EiB.
    pub fn bytes(&self) -> Option<u64> {
        u64::try_from(self.milli / 1000).ok()
    }
}

fn split(text: &str) -> (&str, &str) {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    (digits, &text[digits.len()..])
}

fn number(digits: &str) -> Option<u128> {
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// By value; equal values with other texts (`1Gi`, `1024Mi`) by text, so the order is total
/// and agrees with `==`.
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.milli
            .cmp(&other.milli)
            .then_with(|| self.text.cmp(&other.text))
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Quantity> for k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    fn from(q: Quantity) -> Self {
        Self(q.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_takes_binary_suffixes_only() {
        assert_eq!(Quantity::memory(" 320Mi ").unwrap().as_str(), "320Mi");
        assert_eq!(Quantity::memory("100Gi").unwrap().bytes(), Some(100 << 30));
        assert_eq!(Quantity::memory("999999999Ti").unwrap().bytes(), None);
        for bad in [
            "",
            "Mi",
            "1",
            "1G",
            "1.5Gi",
            "-1Gi",
            "1000000000Mi",
            "1Mi\"\n[x]",
        ] {
            assert!(Quantity::memory(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_takes_cores_or_millicores() {
        assert!(Quantity::cpu("250m").is_some() && Quantity::cpu("2").is_some());
        for bad in ["", "m", "1.5", "1Gi", "-1"] {
            assert!(Quantity::cpu(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn quantities_compare_by_value() {
        let m = |t| Quantity::memory(t).unwrap();
        let c = |t| Quantity::cpu(t).unwrap();
        assert!(m("1Gi") > m("900Mi"));
        assert!(c("1") > c("999m"));
        assert!(m("1Gi") != m("1024Mi") && m("1Gi").max(m("1024Mi")).bytes() == Some(1 << 30));
    }
}
