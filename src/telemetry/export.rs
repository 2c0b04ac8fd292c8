//! Span export that can never slow the request path: a bounded queue and one background
//! task that sends batches to the OTLP exporter.
//!
//! The SDK's own batch processor exports from a dedicated thread with a blocking executor,
//! which cannot drive tonic's or hyper's I/O without a tokio reactor, and it does not say
//! how many spans it dropped. This processor hands each ended span to a bounded channel
//! with `try_send` (a full queue drops the span and counts it in
//! `tcpie_trace_spans_dropped_total`), and exports from a task on the server's own
//! runtime, each export bounded by a timeout. A collector that is down, slow or
//! black-holed therefore costs dropped spans and a log line every few seconds, nothing
//! else. [`ExportTask::flush`] drains what is queued within a deadline at shutdown.
//!
//! It does not build the exporter or read configuration (`telemetry` does).

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus::IntCounter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::BatchSettings;

/// The span processor installed in the tracer provider.
#[derive(Debug)]
pub struct QueueProcessor {
    tx: mpsc::Sender<SpanData>,
    dropped: IntCounter,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Flushing waits on the runtime; the async `ExportTask::flush` does it.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The background task that exports; keep it to flush at shutdown.
#[derive(Debug)]
pub struct ExportTask {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts the export task on the current runtime and returns the processor feeding it.
pub fn start<E: SpanExporter + 'static>(
    exporter: E,
    settings: BatchSettings,
    dropped: IntCounter,
) -> (QueueProcessor, ExportTask) {
    let (tx, rx) = mpsc::channel(settings.max_queue_size.max(1));
    let stop = CancellationToken::new();
    let task = tokio::spawn(export_loop(
        exporter,
        rx,
        settings,
        dropped.clone(),
        stop.clone(),
    ));
    (QueueProcessor { tx, dropped }, ExportTask { stop, task })
}

impl ExportTask {
    /// Exports what is queued, giving up at `deadline`; spans left then are dropped.
    pub async fn flush(self, deadline: Duration) {
        self.stop.cancel();
        let mut task = self.task;
        if timeout(deadline, &mut task).await.is_err() {
            task.abort();
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "shutdown: pending spans not exported in time, dropped"
            );
        }
    }
}

/// Failed exports are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(5);

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    settings: BatchSettings,
    dropped: IntCounter,
    stop: CancellationToken,
) {
    let mut sender = Sender {
        exporter,
        settings,
        dropped,
        last_log: None,
        failed_since_log: 0,
    };
    let mut batch: Vec<SpanData> = Vec::with_capacity(settings.max_batch_size);
    loop {
        // Wait for a first span, then up to the schedule delay for a full batch.
        let first = tokio::select! {
            biased;
            span = rx.recv() => span,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        let deadline = Instant::now() + settings.schedule_delay;
        while batch.len() < settings.max_batch_size {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                span = timeout_at(deadline, rx.recv()) => span,
            };
            match next {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        sender.send(&mut batch).await;
    }
    // Stopping: send everything still queued, batch by batch.
    rx.close();
    while let Ok(span) = rx.try_recv() {
        batch.push(span);
        if batch.len() >= settings.max_batch_size {
            sender.send(&mut batch).await;
        }
    }
    if !batch.is_empty() {
        sender.send(&mut batch).await;
    }
    let _ = sender.exporter.shutdown();
}

/// The exporter with what a failed export needs: the drop counter and the log throttle.
struct Sender<E> {
    exporter: E,
    settings: BatchSettings,
    dropped: IntCounter,
    last_log: Option<Instant>,
    failed_since_log: u64,
}

impl<E: SpanExporter> Sender<E> {
    /// Exports `batch` (leaving it empty); a failure drops and counts its spans.
    async fn send(&mut self, batch: &mut Vec<SpanData>) {
        let spans = std::mem::replace(batch, Vec::with_capacity(self.settings.max_batch_size));
        let count = spans.len() as u64;
        let error = match timeout(self.settings.export_timeout, self.exporter.export(spans)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "no answer within {} ms",
                self.settings.export_timeout.as_millis()
            ),
        };
        self.dropped.inc_by(count);
        self.failed_since_log += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::warn!(
                %error,
                spans = count,
                failed_exports = self.failed_since_log,
                dropped_total = self.dropped.get(),
                "exporting spans failed; they were dropped"
            );
            self.last_log = Some(now);
            self.failed_since_log = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn counter() -> IntCounter {
        IntCounter::new("dropped", "test").unwrap()
    }

    fn make_spans(provider: &SdkTracerProvider, n: usize) {
        use opentelemetry::trace::{Tracer, TracerProvider};
        let tracer = provider.tracer("test");
        for i in 0..n {
            tracer.in_span(format!("span {i}"), |_| {});
        }
    }

    /// Remembers the size of every batch it was given.
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        batches: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.batches.lock().unwrap().push(batch.len());
            Ok(())
        }
    }

    #[tokio::test]
    async fn exports_in_batches_and_flushes_on_stop() {
        let exporter = Recorder::default();
        let settings = BatchSettings {
            max_batch_size: 10,
            ..BatchSettings::default()
        };
        let (processor, task) = start(exporter.clone(), settings, counter());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        make_spans(&provider, 25);
        // The schedule delay (5 s) has not passed: the flush sends what is queued.
        task.flush(Duration::from_secs(5)).await;
        let batches = exporter.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 25);
        assert!(batches.iter().all(|n| *n <= 10), "{batches:?}");
    }

    #[tokio::test]
    async fn a_partial_batch_waits_at_most_the_schedule_delay() {
        let exporter = Recorder::default();
        let settings = BatchSettings {
            schedule_delay: Duration::from_millis(50),
            ..BatchSettings::default()
        };
        let (processor, task) = start(exporter.clone(), settings, counter());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        make_spans(&provider, 3);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*exporter.batches.lock().unwrap(), vec![3]);
        task.flush(Duration::from_secs(1)).await;
    }

    /// An exporter that never answers, like a black-holed collector.
    #[derive(Debug, Clone, Default)]
    struct BlackHole {
        calls: Arc<AtomicUsize>,
    }

    impl SpanExporter for BlackHole {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_black_hole_costs_only_dropped_spans() {
        let dropped = counter();
        let exporter = BlackHole::default();
        let settings = BatchSettings {
            max_queue_size: 100,
            max_batch_size: 10,
            schedule_delay: Duration::from_millis(10),
            export_timeout: Duration::from_millis(200),
        };
        let (processor, task) = start(exporter.clone(), settings, dropped.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        // Ending spans never waits: 1,000 spans against a queue of 100 and a stuck export.
        let started = std::time::Instant::now();
        make_spans(&provider, 1000);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Everything past the queue was dropped at once, and counted.
        assert!(dropped.get() >= 1000 - 100 - 10, "{}", dropped.get());
        // The flush is bounded by its deadline, however stuck the exporter is.
        let started = std::time::Instant::now();
        task.flush(Duration::from_millis(500)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(exporter.calls.load(Ordering::SeqCst) >= 1);
    }

    #[tokio::test]
    async fn a_timed_out_export_counts_its_spans_as_dropped() {
        let dropped = counter();
        let settings = BatchSettings {
            max_queue_size: 100,
            max_batch_size: 5,
            schedule_delay: Duration::from_millis(10),
            export_timeout: Duration::from_millis(50),
        };
        let (processor, task) = start(BlackHole::default(), settings, dropped.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        make_spans(&provider, 5);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(dropped.get(), 5);
        task.flush(Duration::from_millis(100)).await;
    }
}
