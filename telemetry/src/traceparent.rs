//! W3C Trace Context: the `traceparent` header, parsed strictly and formatted.
//!
//! Only version `00` is accepted, in its exact form `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, with
//! non-zero trace and span ids. Anything else is "no parent": the caller starts a new trace rather
//! than guessing, and nothing here panics on any input (a property test feeds it arbitrary text).

use std::fmt;

/// Length of a version-00 `traceparent` value.
const TRACEPARENT_LEN: usize = 55;
/// The `sampled` bit of the trace flags.
const FLAG_SAMPLED: u8 = 0x01;

/// A 16-byte trace id; never all zeros when obtained from this module.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// An 8-byte span id; never all zeros when obtained from this module.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// A fresh random, non-zero trace id.
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 16] = rand::random();
            if bytes != [0; 16] {
                return TraceId(bytes);
            }
        }
    }

    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// A fresh random, non-zero span id.
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 8] = rand::random();
            if bytes != [0; 8] {
                return SpanId(bytes);
            }
        }
    }

    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

/// Lowercase hex, as in `traceparent` and in OTLP's JSON encoding.
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex::<16, 32>(&self.0, f)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// Lowercase hex, as in `traceparent` and in OTLP's JSON encoding.
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex::<8, 16>(&self.0, f)
    }
}

/// Lowercase hex through a stack buffer: formatting an id allocates nothing of its own.
fn write_hex<const N: usize, const H: usize>(
    bytes: &[u8; N],
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let mut buf = [0u8; H];
    hex::encode_to_slice(bytes, &mut buf).map_err(|_| fmt::Error)?;
    f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The identity of one span as another process sees it: what `traceparent` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace the span belongs to.
    pub trace_id: TraceId,
    /// The span itself (the parent, when read from an incoming request).
    pub span_id: SpanId,
    /// Whether the caller recorded it: spans below an unsampled parent are not recorded.
    pub sampled: bool,
}

/// Why a `traceparent` value was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceparentError {
    /// Not 55 bytes long (the only length version 00 has).
    #[error("traceparent must be 55 characters long")]
    Length,
    /// A version other than `00`.
    #[error("unsupported traceparent version")]
    Version,
    /// A missing `-`, or a field that is not lowercase hex.
    #[error("traceparent is not 00-<32 hex>-<16 hex>-<2 hex> in lowercase")]
    Syntax,
    /// An all-zero trace id or span id (invalid by the specification).
    #[error("traceparent has an all-zero trace id or span id")]
    ZeroId,
}

impl TraceContext {
    /// Parses a `traceparent` header value.
    ///
    /// # Errors
    /// [`TraceparentError`] saying what is wrong; callers start a new trace on any error.
    pub fn parse(value: &str) -> Result<Self, TraceparentError> {
        let b = value.as_bytes();
        if b.len() != TRACEPARENT_LEN {
            return Err(TraceparentError::Length);
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceparentError::Syntax);
        }
        let mut version = [0u8; 1];
        decode_lower_hex(&b[0..2], &mut version)?;
        if version[0] != 0 {
            return Err(TraceparentError::Version);
        }
        let mut trace = [0u8; 16];
        let mut span = [0u8; 8];
        let mut flags = [0u8; 1];
        decode_lower_hex(&b[3..35], &mut trace)?;
        decode_lower_hex(&b[36..52], &mut span)?;
        decode_lower_hex(&b[53..55], &mut flags)?;
        if trace == [0; 16] || span == [0; 8] {
            return Err(TraceparentError::ZeroId);
        }
        Ok(TraceContext {
            trace_id: TraceId(trace),
            span_id: SpanId(span),
            sampled: flags[0] & FLAG_SAMPLED != 0,
        })
    }

    /// A new root context: fresh ids, sampled (the OpenTelemetry default, "parent-based, always
    /// on", records every trace that starts here).
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled: true,
        }
    }

    /// The `traceparent` header value for this context (version 00).
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            if self.sampled { FLAG_SAMPLED } else { 0 }
        )
    }
}

/// Decodes lowercase hex `src` (twice as long as `out`) into `out`; uppercase is rejected, as the
/// specification requires.
fn decode_lower_hex(src: &[u8], out: &mut [u8]) -> Result<(), TraceparentError> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TraceparentError::Syntax),
    };
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparent_round_trips() {
        let c = TraceContext::parse(VALID).unwrap();
        assert_eq!(c.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id.to_string(), "00f067aa0ba902b7");
        assert!(c.sampled);
        assert_eq!(c.to_traceparent(), VALID);
    }

    #[test]
    fn unsampled_flag_and_other_flag_bits() {
        let c = TraceContext::parse(&VALID.replace("-01", "-00")).unwrap();
        assert!(!c.sampled);
        // Unknown flag bits are allowed; only bit 0 means sampled.
        let c = TraceContext::parse(&VALID.replace("-01", "-fe")).unwrap();
        assert!(!c.sampled);
        assert!(
            TraceContext::parse(&VALID.replace("-01", "-03"))
                .unwrap()
                .sampled
        );
    }

    #[test]
    fn invalid_variants_are_rejected_with_their_reason() {
        use TraceparentError::*;
        let cases = [
            ("", Length),
            ("garbage", Length),
            (&*format!("{VALID}-extra"), Length),
            (&*format!(" {VALID}"), Length),
            (&*VALID.replacen("00", "01", 1), Version),
            (&*VALID.replacen("00", "ff", 1), Version),
            (&*VALID.to_uppercase(), Syntax),
            (&*VALID.replace("4bf92f", "4bf92g"), Syntax),
            (&*VALID.replacen('-', "_", 1), Syntax),
            (&*VALID.replace("-01", "-0x"), Syntax),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroId,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(TraceContext::parse(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn multibyte_text_of_the_right_length_is_rejected() {
        // 55 bytes, with a multi-byte character straddling a field boundary.
        let s = format!("00-{}é-00f067aa0ba902b7-01", "a".repeat(30));
        assert_eq!(s.len(), 55);
        assert!(TraceContext::parse(&s).is_err());
    }

    #[test]
    fn new_roots_are_sampled_and_distinct() {
        let (a, b) = (TraceContext::new_root(), TraceContext::new_root());
        assert!(a.sampled);
        assert_ne!(a.trace_id, b.trace_id);
        assert!(TraceContext::parse(&a.to_traceparent()).is_ok());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = TraceContext::parse(&s);
        }

        #[test]
        fn near_valid_input_never_panics(s in "[0-9a-fA-F-]{50,60}") {
            let _ = TraceContext::parse(&s);
        }

        #[test]
        fn formatted_contexts_parse_back(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>(), sampled: bool) {
            prop_assume!(trace != [0; 16] && span != [0; 8]);
            let c = TraceContext { trace_id: TraceId(trace), span_id: SpanId(span), sampled };
            prop_assert_eq!(TraceContext::parse(&c.to_traceparent()), Ok(c));
        }
    }
}
