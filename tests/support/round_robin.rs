//! A load balancer for the tests: a TCP front on a free loopback port that hands each new
//! connection to the next backend in turn. Clients that open one connection per request
//! (no keep-alive pool) get one backend per request, round robin.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

pub struct RoundRobin {
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    /// Connections handed to each backend, by index.
    pub served: Arc<Mutex<Vec<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    /// Listens now (so that its URL can be configured before the backends exist); forwards
    /// once [`RoundRobin::set_backends`] was called.
    pub async fn bind() -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the front");
        let addr = listener.local_addr().unwrap();
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let served: Arc<Mutex<Vec<usize>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let task = {
            let (backends, served) = (backends.clone(), served.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let chosen = {
                        let list = backends.lock().unwrap();
                        if list.is_empty() {
                            None
                        } else {
                            let i = next.fetch_add(1, Ordering::SeqCst) % list.len();
                            served.lock().unwrap()[i] += 1;
                            Some(list[i])
                        }
                    };
                    let Some(backend) = chosen else { continue };
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            })
        };
        RoundRobin {
            addr,
            backends,
            served,
            task,
        }
    }

    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        *self.served.lock().unwrap() = vec![0; backends.len()];
        *self.backends.lock().unwrap() = backends;
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
