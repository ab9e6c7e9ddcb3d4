//! A metadata log on one broker's disk, with that broker always the controller: the
//! single-node stand-in for the Raft quorum, used by controller tests.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::store::{MetadataStore, StoreError};
use crate::metadata::controller::{BoxFuture, MetadataLog, ProposeError};
use crate::metadata::image::cache::{MetadataCache, MetadataListener};
use crate::metadata::image::records::MetadataRecord;
use crate::metadata::image::MetadataImage;

struct State {
    store: MetadataStore,
    image: MetadataImage,
}

pub struct LocalLog {
    node_id: i32,
    http_address: String,
    state: Arc<Mutex<State>>,
    cache: Arc<MetadataCache>,
    listener: Arc<dyn MetadataListener>,
}

impl LocalLog {
    /// Replays the file into the image; the listener sees it once.
    pub fn open(
        path: &Path,
        node_id: i32,
        http_address: String,
        cache: Arc<MetadataCache>,
        listener: Arc<dyn MetadataListener>,
    ) -> Result<LocalLog, StoreError> {
        let (store, records) = MetadataStore::open(path)?;
        let mut image = MetadataImage::default();
        records.iter().for_each(|r| image.apply(r));
        cache.publish(Arc::new(image.clone()));
        listener.on_image_loaded(&image);
        Ok(LocalLog {
            node_id,
            http_address,
            state: Arc::new(Mutex::new(State { store, image })),
            cache,
            listener,
        })
    }
}

impl MetadataLog for LocalLog {
    fn propose(&self, records: Vec<MetadataRecord>) -> BoxFuture<'_, Result<(), ProposeError>> {
        let (state, cache, listener) = (
            self.state.clone(),
            self.cache.clone(),
            self.listener.clone(),
        );
        Box::pin(async move {
            // fsync and the listener's file work are blocking.
            let work = tokio::task::spawn_blocking(move || {
                // The image is only changed after the records are durable, so a panic
                // elsewhere while holding the lock leaves a consistent state.
                let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                state
                    .store
                    .append(&records)
                    .map_err(|e| ProposeError::Failed(e.to_string()))?;
                records.iter().for_each(|r| state.image.apply(r));
                cache.publish(Arc::new(state.image.clone()));
                listener.on_records(&state.image, &records);
                Ok(())
            });
            match work.await {
                Ok(result) => result,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }

    fn leader(&self) -> Option<(i32, String)> {
        Some((self.node_id, self.http_address.clone()))
    }

    fn is_leader(&self) -> bool {
        true
    }
}
