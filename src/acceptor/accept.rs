//! Listeners and the accept loop: binding with socket2 (backlog,
//! SO_REUSEPORT), accepting until the kernel has no more, each connection's
//! admission to the pending table (`guard.rs`: the per-address cap, and at
//! a full budget the eviction of the oldest, so accepting never pauses) and
//! the socket options of an accepted connection.

use std::io;
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::Acceptor;
use super::guard::Admission;
use super::pending::{Family, PendingState};

pub(super) const MAIN_LISTENER: Token = Token(usize::MAX - 1);
pub(super) const ECHO_LISTENER: Token = Token(usize::MAX - 2);
pub(super) const ADMIN_LISTENER: Token = Token(usize::MAX - 4);

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    Main,
    Echo,
    /// `admin_listen`: the HTTP API only, no WebSocket.
    Admin,
}

/// The listening sockets, registered with the acceptor's poll.
pub(super) struct Listeners {
    main: TcpListener,
    echo: Option<TcpListener>,
    admin: Option<TcpListener>,
}

/// Binds a listener with socket2 so that backlog and SO_REUSEPORT are ours to set.
pub fn bind(addr: SocketAddr, backlog: i32, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

impl Listeners {
    pub(super) fn register(
        registry: &mio::Registry,
        main: std::net::TcpListener,
        echo: Option<std::net::TcpListener>,
        admin: Option<std::net::TcpListener>,
    ) -> io::Result<Listeners> {
        let register = |listener: std::net::TcpListener, token: Token| -> io::Result<TcpListener> {
            let mut listener = TcpListener::from_std(listener);
            registry.register(&mut listener, token, Interest::READABLE)?;
            Ok(listener)
        };
        Ok(Listeners {
            main: register(main, MAIN_LISTENER)?,
            echo: echo.map(|listener| register(listener, ECHO_LISTENER)).transpose()?,
            admin: admin.map(|listener| register(listener, ADMIN_LISTENER)).transpose()?,
        })
    }

    /// Whether a separate admin listener exists (the main one is then public).
    pub(super) fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    /// The next connection on `listener`; `None` when it is not configured.
    fn accept(&self, listener: Listener) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        match listener {
            Listener::Main => Some(self.main.accept()),
            Listener::Echo => self.echo.as_ref().map(TcpListener::accept),
            Listener::Admin => self.admin.as_ref().map(TcpListener::accept),
        }
    }
}

impl Acceptor {
    /// Accepts from `listener` until the kernel has no more.
    pub(super) fn accept_all(&mut self, listener: Listener) {
        loop {
            let Some(accepted) = self.listeners.accept(listener) else { return };
            match accepted {
                Ok((stream, peer)) => self.admit(stream, listener, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and come back on the next event.
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    /// Gives the connection a pending slot, making room if its budget is
    /// full, or refuses it (its address holds its share).
    fn admit(&mut self, stream: TcpStream, listener: Listener, peer: SocketAddr) {
        match self.pending.admission(listener, Some(peer)) {
            Admission::Admit => {}
            Admission::PerSourceFull => return self.refuse_per_source(stream, peer),
            Admission::Evict(slot) => self.evict(slot),
            Admission::Full => return self.drop_unadmitted(stream),
        }
        self.start_pending(stream, listener, Some(peer));
    }

    fn start_pending(&mut self, mut stream: TcpStream, listener: Listener, peer: Option<SocketAddr>) {
        if self.config.net.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let slot = self.pending.next_slot();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!(error = %e, "cannot register accepted connection");
            return;
        }
        let family = match listener {
            Listener::Main => Family::Unknown,
            Listener::Echo => Family::WebSocket,
            Listener::Admin => Family::Api,
        };
        self.pending.insert(stream, listener, family, peer, PendingState::ReadingHead);
        // The request may already be here; edge-triggered readiness would not tell us again.
        self.on_pending(slot);
    }
}
