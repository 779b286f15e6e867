//! The threads that own the SQLite connections: one writer with group commit, a few readers.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, TransactionBehavior};
use sessio::StoreError;
use tokio::sync::oneshot;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 128;

/// A write: runs inside the batch transaction, in its own savepoint, and learns after the
/// commit whether its result may be acknowledged.
pub(crate) trait WriteJob: Send {
    /// Runs the operation; `false` if it failed and its savepoint must be rolled back.
    fn run(&mut self, connection: &Connection) -> bool;
    /// Delivers the result, or `failure` if the transaction did not commit.
    fn finish(self: Box<Self>, failure: Option<StoreError>);
}

struct Write<T, F> {
    operation: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Write<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let Some(operation) = self.operation.take() else {
            return false;
        };
        let result = operation(connection);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, failure: Option<StoreError>) {
        let result = match (failure, self.result) {
            (_, Some(Err(error))) => Err(error),
            (Some(failure), _) => Err(failure),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::backend("sqlite write was never run")),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.reply.send(result);
    }
}

pub(crate) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Handles to the worker threads. Dropping the last one closes the queues, and the threads
/// finish what is queued and exit.
pub(crate) struct Workers {
    writes: Sender<Box<dyn WriteJob>>,
    reads: Sender<ReadJob>,
}

pub(crate) fn stopped() -> StoreError {
    StoreError::unavailable("the sqlite worker threads have stopped")
}

pub(crate) fn sqlite_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen) => {
            StoreError::unavailable(error)
        }
        _ => StoreError::backend(error),
    }
}

impl Workers {
    pub(crate) fn start(
        writer: Connection,
        readers: Vec<Connection>,
    ) -> Result<Arc<Self>, StoreError> {
        let (writes, write_queue) = crossbeam_channel::unbounded::<Box<dyn WriteJob>>();
        let (reads, read_queue) = crossbeam_channel::unbounded::<ReadJob>();
        std::thread::Builder::new()
            .name("sessio-sqlite-writer".into())
            .spawn(move || write_loop(writer, &write_queue))
            .map_err(StoreError::backend)?;
        for (i, connection) in readers.into_iter().enumerate() {
            let queue = read_queue.clone();
            std::thread::Builder::new()
                .name(format!("sessio-sqlite-reader-{i}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv() {
                        job(&connection);
                    }
                })
                .map_err(StoreError::backend)?;
        }
        Ok(Arc::new(Self { writes, reads }))
    }

    /// Runs `operation` on the writer, in the next batch transaction, and returns its result
    /// once that transaction committed.
    pub(crate) async fn write<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job = Box::new(Write {
            operation: Some(operation),
            result: None,
            reply,
        });
        self.writes.send(job).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }

    /// [`Workers::write`] for a caller outside the async runtime (the purge thread).
    pub(crate) fn write_blocking<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job = Box::new(Write {
            operation: Some(operation),
            result: None,
            reply,
        });
        self.writes.send(job).map_err(|_| stopped())?;
        result.blocking_recv().map_err(|_| stopped())?
    }

    /// Runs `operation` on a reader connection.
    pub(crate) async fn read<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: ReadJob = Box::new(move |connection| {
            let _ = reply.send(operation(connection));
        });
        self.reads.send(job).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

fn write_loop(mut connection: Connection, queue: &Receiver<Box<dyn WriteJob>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let failure = run_batch(&mut connection, &mut batch).err();
        for job in batch {
            job.finish(failure.as_ref().map(copy_error));
        }
    }
}

/// The same failure for every job of a batch that did not commit.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(_) => StoreError::unavailable(error.to_string()),
        _ => StoreError::backend(error.to_string()),
    }
}

fn run_batch(
    connection: &mut Connection,
    batch: &mut [Box<dyn WriteJob>],
) -> Result<(), StoreError> {
    let mut transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    for job in batch.iter_mut() {
        let savepoint = transaction.savepoint().map_err(sqlite_error)?;
        if job.run(&savepoint) {
            savepoint.commit().map_err(sqlite_error)?;
        } else {
            // Dropping an uncommitted savepoint rolls back this job's changes only.
            drop(savepoint);
        }
    }
    transaction.commit().map_err(sqlite_error)
}
