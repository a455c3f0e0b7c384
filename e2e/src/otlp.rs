//! A loopback OTLP/HTTP receiver that keeps the spans POSTed to `/v1/traces`.
//!
//! No OpenTelemetry Collector or Jaeger binary is installable on the test machines (they ship as
//! container images or release tarballs), so tests stand in for the collector with this: it
//! accepts exactly what a collector's OTLP/HTTP JSON endpoint accepts from our exporter and
//! decodes the `ExportTraceServiceRequest` bodies, so the tests assert on the spans a real
//! backend would store. Plain HTTP/1.1 on std threads; each answer closes its connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One received span, flattened: the span's JSON object plus the `service.name` of its resource.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// `service.name` of the resource the span came with.
    pub service: String,
    /// The span object as sent (`traceId`, `spanId`, `parentSpanId`, `name`, `attributes`, ...).
    pub span: Value,
}

impl ReceivedSpan {
    /// A string field of the span (`traceId`, `name`, ...); empty when absent.
    pub fn field(&self, name: &str) -> &str {
        self.span[name].as_str().unwrap_or_default()
    }

    /// An attribute's value rendered as text (string, integer or boolean), if present.
    pub fn attribute(&self, key: &str) -> Option<String> {
        let attrs = self.span["attributes"].as_array()?;
        let v = &attrs.iter().find(|a| a["key"] == key)?["value"];
        v["stringValue"]
            .as_str()
            .or_else(|| v["intValue"].as_str())
            .map(str::to_owned)
            .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
    }
}

/// The receiver; stops accepting when dropped (its thread ends with the test process).
pub struct OtlpReceiver {
    addr: SocketAddr,
    /// Spans kept (none when discarding).
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// Spans received, kept or not.
    count: Arc<AtomicUsize>,
    /// Request paths and content types seen, for asserting on the protocol itself.
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl OtlpReceiver {
    /// Listens on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start() -> OtlpReceiver {
        Self::listen(true)
    }

    /// As [`OtlpReceiver::start`], but only counts the spans (benchmarks send too many to keep).
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn discarding() -> OtlpReceiver {
        Self::listen(false)
    }

    fn listen(keep: bool) -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let receiver = OtlpReceiver {
            addr,
            spans: Arc::new(Mutex::new(Vec::new())),
            count: Arc::new(AtomicUsize::new(0)),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let (s, c, r) = (
            Arc::clone(&receiver.spans),
            Arc::clone(&receiver.count),
            Arc::clone(&receiver.requests),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, c, r) = (Arc::clone(&s), Arc::clone(&c), Arc::clone(&r));
                std::thread::spawn(move || {
                    let _ = serve(stream, keep.then_some(&*s), &c, &r);
                });
            }
        });
        receiver
    }

    /// How many spans arrived so far (also when discarding).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full traces URL, as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` takes it.
    pub fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// `(path, content-type)` of every request received so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Polls until `done` holds for the spans received, or `timeout`; returns the spans either way.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let until = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= until {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(
    stream: TcpStream,
    spans: Option<&Mutex<Vec<ReceivedSpan>>>,
    count: &AtomicUsize,
    requests: &Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let (mut length, mut content_type) = (0usize, String::new());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "content-type" => content_type = v.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let status = match serde_json::from_slice::<Value>(&body) {
        Ok(request) => {
            let received = flatten(&request);
            count.fetch_add(received.len(), Ordering::Relaxed);
            if let Some(mut s) = spans.and_then(|s| s.lock().ok()) {
                s.extend(received);
                if let Ok(mut r) = requests.lock() {
                    r.push((path, content_type));
                }
            }
            "200 OK"
        }
        Err(_) => "400 Bad Request",
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    )
}

fn flatten(request: &Value) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    span: span.clone(),
                });
            }
        }
    }
    out
}
