//! The latest image as the rest of the broker sees it. The quorum's state machine publishes each
//! applied image to the [`MetadataCache`], which the controller and request handlers read, and
//! tells the [`MetadataListener`]s (the replica manager, the group coordinator) of every
//! committed change.

use std::sync::{Arc, RwLock};

use super::records::MetadataRecord;
use super::MetadataImage;

/// Receives every committed batch of records, in order.
pub trait MetadataListener: Send + Sync {
    /// A whole image: replayed from the metadata log at start, or installed from a snapshot.
    fn on_image_loaded(&self, image: &MetadataImage);
    /// Records committed after that.
    fn on_records(&self, image: &MetadataImage, records: &[MetadataRecord]);
}

/// Several listeners, called in order.
pub struct Listeners(pub Vec<Arc<dyn MetadataListener>>);

impl MetadataListener for Listeners {
    fn on_image_loaded(&self, image: &MetadataImage) {
        self.0.iter().for_each(|l| l.on_image_loaded(image));
    }
    fn on_records(&self, image: &MetadataImage, records: &[MetadataRecord]) {
        self.0.iter().for_each(|l| l.on_records(image, records));
    }
}

/// The latest applied image, shared by every request handler. Readers take a cheap `Arc`
/// snapshot and never block the metadata log; waiters are told of each new image.
pub struct MetadataCache {
    image: RwLock<Arc<MetadataImage>>,
    published: tokio::sync::watch::Sender<u64>,
}

impl Default for MetadataCache {
    fn default() -> Self {
        MetadataCache {
            image: RwLock::default(),
            published: tokio::sync::watch::channel(0).0,
        }
    }
}

impl MetadataCache {
    pub fn current(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn publish(&self, image: Arc<MetadataImage>) {
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
        self.published.send_modify(|n| *n += 1);
    }

    /// Changes each time an image is published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }
}
