//! [`TestDatabase`]: a MongoDB database of one test's own, dropped when the
//! test ends (feature `mongodb`).

use std::time::Duration;

use mongodb::{Client, Database};

use crate::env::{mongodb_uri, unique_db};

/// A client for test bookkeeping (creating, inspecting, dropping), failing
/// fast when the server is gone.
pub async fn client(uri: &str) -> anyhow::Result<Client> {
    let mut options = mongodb::options::ClientOptions::parse(uri).await?;
    options.server_selection_timeout = Some(Duration::from_secs(5));
    Ok(Client::with_options(options)?)
}

/// Drops `database` on the server at `uri`.
pub async fn drop_database(uri: &str, database: &str) -> anyhow::Result<()> {
    client(uri).await?.database(database).drop().await?;
    Ok(())
}

/// A uniquely named database on a MongoDB server, dropped by
/// [`cleanup`](Self::cleanup), or on drop when the test failed before
/// getting there.
#[derive(Debug)]
pub struct TestDatabase {
    uri: String,
    name: String,
    /// Whether [`cleanup`](Self::cleanup) already ran.
    cleaned: bool,
}

impl TestDatabase {
    /// A fresh database on the shared server (`EDGEPUSH_TEST_MONGODB_URI`).
    pub fn shared() -> anyhow::Result<Self> {
        Ok(Self::on(mongodb_uri()?))
    }

    /// A fresh database on the server at `uri`.
    pub fn on(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            name: unique_db(),
            cleaned: false,
        }
    }

    /// The server's URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database, through a client of its own.
    pub async fn db(&self) -> anyhow::Result<Database> {
        Ok(client(&self.uri).await?.database(&self.name))
    }

    /// Drops the database.
    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        self.cleaned = true;
        drop_database(&self.uri, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // The test failed (or returned early), possibly while its runtime
        // unwinds: drop the database from a fresh thread and runtime.
        let (uri, name) = (self.uri.clone(), std::mem::take(&mut self.name));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(drop_database(&uri, &name))
        })
        .join();
    }
}
