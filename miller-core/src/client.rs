//! A beanstalk client on tokio: one connection, requests answered in
//! order, pipelined when given together ([`Queue::put_batch`],
//! [`Client::pipeline`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Decoder;

use crate::proto::{ClientCodec, Request, Response, is_valid_tube, parse_list, parse_stats};
use crate::queue::whole_secs as secs;
use crate::{Error, Job, ProtocolError, PutParams, Queue, QueueError, Stats};

/// A beanstalk client: a connection to beanstalkd or to miller's served
/// engine, implementing [`Queue`].
///
/// A call cut short (its future dropped mid-way, as by a timeout) leaves
/// the connection in an unknown place of the conversation: later calls
/// then fail with [`Error::Closed`]; connect again.
///
/// ```no_run
/// # async fn demo() -> Result<(), miller_core::Error> {
/// use miller_core::{Client, PutParams, Queue};
/// let mut client = Client::connect("127.0.0.1:11300").await?;
/// client.use_tube("zhihu").await?;
/// let id = client.put("hello".into(), PutParams::default()).await?;
/// client.watch("zhihu").await?;
/// let job = client.reserve(Some(std::time::Duration::from_secs(1))).await?.expect("a job");
/// assert_eq!(job.id, id);
/// client.delete(job.id).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    codec: ClientCodec,
    read: BytesMut,
    write: BytesMut,
    /// Set while a call is under way: still set at the next call means the
    /// last one was dropped mid-way.
    busy: bool,
}

impl Client {
    /// Connects to a beanstalk server.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, Error> {
        let stream = TcpStream::connect(addr).await?;
        Ok(Self::from_stream(stream))
    }

    /// A client on a connected stream.
    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            codec: ClientCodec::new(),
            read: BytesMut::with_capacity(16 * 1024),
            write: BytesMut::with_capacity(16 * 1024),
            busy: false,
        }
    }

    /// Takes reply bodies up to `max` bytes (default
    /// [`crate::proto::DEFAULT_MAX_REPLY_BODY`]).
    pub fn max_reply_body(mut self, max: usize) -> Self {
        self.codec = ClientCodec::with_max_body(max);
        self
    }

    /// Sends one request and reads its reply.
    ///
    /// # Errors
    /// IO, a reply that is not beanstalk's, [`Error::Closed`].
    pub async fn call(&mut self, request: Request) -> Result<Response, Error> {
        let mut replies = self.pipeline(std::iter::once(request)).await?;
        replies.pop().ok_or(Error::Closed)
    }

    /// Sends every request in one write, then reads their replies in order.
    /// A request that the server answers only later (`reserve`) holds the
    /// ones after it back, as on any beanstalk connection.
    ///
    /// # Errors
    /// IO, a reply that is not beanstalk's, [`Error::Closed`]: no reply is
    /// known then for the requests not answered.
    pub async fn pipeline(
        &mut self,
        requests: impl IntoIterator<Item = Request>,
    ) -> Result<Vec<Response>, Error> {
        if self.busy {
            return Err(Error::Closed);
        }
        self.write.clear();
        let mut n = 0;
        for r in requests {
            if let Request::Quit = r {
                // No reply comes to a quit.
                r.encode(&mut self.write);
                continue;
            }
            r.encode(&mut self.write);
            n += 1;
        }
        self.busy = true;
        self.stream.write_all(&self.write).await?;
        let mut replies = Vec::with_capacity(n);
        while replies.len() < n {
            if let Some(reply) = self.codec.decode(&mut self.read)? {
                replies.push(reply);
                continue;
            }
            if self.read.capacity() - self.read.len() < 4096 {
                self.read.reserve(16 * 1024);
            }
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return Err(Error::Closed);
            }
        }
        self.busy = false;
        Ok(replies)
    }

    async fn expect<T>(
        &mut self,
        request: Request,
        f: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T, Error> {
        let reply = self.call(request).await?;
        settle(reply, f)
    }
}

/// A reply turned into its value, its beanstalk error, or a protocol error.
fn settle<T>(reply: Response, f: impl FnOnce(Response) -> Option<T>) -> Result<T, Error> {
    if let Some(e) = reply.as_error() {
        return Err(Error::Queue(e));
    }
    let text = format!("{reply:?}");
    f(reply).ok_or(Error::Protocol(ProtocolError::UnexpectedReply(text)))
}

fn tube(name: &str) -> Result<String, Error> {
    if is_valid_tube(name) {
        Ok(name.to_owned())
    } else {
        Err(Error::Queue(QueueError::BadFormat))
    }
}

fn put_request(body: Bytes, params: PutParams) -> Request {
    Request::Put {
        priority: params.priority,
        delay: secs(params.delay),
        ttr: secs(params.ttr),
        body,
    }
}

fn job(reply: Response) -> Option<Option<Job>> {
    match reply {
        Response::Found { id, body } | Response::Reserved { id, body } => {
            Some(Some(Job { id, body }))
        }
        _ => None,
    }
}

async fn peek(client: &mut Client, request: Request) -> Result<Option<Job>, Error> {
    match client.call(request).await? {
        Response::NotFound => Ok(None),
        reply => settle(reply, job),
    }
}

async fn stats(client: &mut Client, request: Request) -> Result<Stats, Error> {
    let reply = client.call(request).await?;
    let body = settle(reply, |r| match r {
        Response::Ok(body) => Some(body),
        _ => None,
    })?;
    Ok(parse_stats(&body)?)
}

async fn list(client: &mut Client, request: Request) -> Result<Vec<String>, Error> {
    let reply = client.call(request).await?;
    let body = settle(reply, |r| match r {
        Response::Ok(body) => Some(body),
        _ => None,
    })?;
    Ok(parse_list(&body)?)
}

impl Queue for Client {
    async fn use_tube(&mut self, name: &str) -> Result<(), Error> {
        let name = tube(name)?;
        self.expect(Request::Use(name), |r| {
            matches!(r, Response::Using(_)).then_some(())
        })
        .await
    }

    async fn put(&mut self, body: Bytes, params: PutParams) -> Result<u64, Error> {
        self.expect(put_request(body, params), |r| match r {
            Response::Inserted(id) => Some(id),
            _ => None,
        })
        .await
    }

    async fn put_batch(
        &mut self,
        jobs: Vec<(Bytes, PutParams)>,
    ) -> Result<Vec<Result<u64, Error>>, Error> {
        let replies = self
            .pipeline(
                jobs.into_iter()
                    .map(|(body, params)| put_request(body, params)),
            )
            .await?;
        Ok(replies
            .into_iter()
            .map(|r| {
                settle(r, |r| match r {
                    Response::Inserted(id) => Some(id),
                    _ => None,
                })
            })
            .collect())
    }

    async fn watch(&mut self, name: &str) -> Result<u64, Error> {
        let name = tube(name)?;
        self.expect(Request::Watch(name), |r| match r {
            Response::Watching(n) => Some(n),
            _ => None,
        })
        .await
    }

    async fn ignore(&mut self, name: &str) -> Result<u64, Error> {
        let name = tube(name)?;
        self.expect(Request::Ignore(name), |r| match r {
            Response::Watching(n) => Some(n),
            _ => None,
        })
        .await
    }

    async fn reserve(&mut self, timeout: Option<Duration>) -> Result<Option<Job>, Error> {
        let request = match timeout {
            None => Request::Reserve,
            Some(t) => Request::ReserveWithTimeout(i32::try_from(secs(t)).unwrap_or(i32::MAX)),
        };
        match self.call(request).await? {
            Response::TimedOut => Ok(None),
            reply => settle(reply, job),
        }
    }

    async fn reserve_job(&mut self, id: u64) -> Result<Job, Error> {
        let reply = self.call(Request::ReserveJob(id)).await?;
        settle(reply, |r| job(r).flatten())
    }

    async fn delete(&mut self, id: u64) -> Result<(), Error> {
        self.expect(Request::Delete(id), |r| {
            (r == Response::Deleted).then_some(())
        })
        .await
    }

    async fn release(&mut self, id: u64, priority: u32, delay: Duration) -> Result<(), Error> {
        let request = Request::Release {
            id,
            priority,
            delay: secs(delay),
        };
        self.expect(request, |r| (r == Response::Released).then_some(()))
            .await
    }

    async fn bury(&mut self, id: u64, priority: u32) -> Result<(), Error> {
        // `BURIED` is the success reply here, not an error.
        match self.call(Request::Bury { id, priority }).await? {
            Response::Buried => Ok(()),
            reply => settle(reply, |_| None),
        }
    }

    async fn touch(&mut self, id: u64) -> Result<(), Error> {
        self.expect(Request::Touch(id), |r| {
            (r == Response::Touched).then_some(())
        })
        .await
    }

    async fn kick(&mut self, bound: u32) -> Result<u64, Error> {
        self.expect(Request::Kick(bound), |r| match r {
            Response::Kicked(n) => Some(n),
            _ => None,
        })
        .await
    }

    async fn kick_job(&mut self, id: u64) -> Result<(), Error> {
        self.expect(Request::KickJob(id), |r| {
            (r == Response::KickedJob).then_some(())
        })
        .await
    }

    async fn peek(&mut self, id: u64) -> Result<Option<Job>, Error> {
        peek(self, Request::Peek(id)).await
    }

    async fn peek_ready(&mut self) -> Result<Option<Job>, Error> {
        peek(self, Request::PeekReady).await
    }

    async fn peek_delayed(&mut self) -> Result<Option<Job>, Error> {
        peek(self, Request::PeekDelayed).await
    }

    async fn peek_buried(&mut self) -> Result<Option<Job>, Error> {
        peek(self, Request::PeekBuried).await
    }

    async fn stats(&mut self) -> Result<Stats, Error> {
        stats(self, Request::Stats).await
    }

    async fn stats_job(&mut self, id: u64) -> Result<Stats, Error> {
        stats(self, Request::StatsJob(id)).await
    }

    async fn stats_tube(&mut self, name: &str) -> Result<Stats, Error> {
        let name = tube(name)?;
        stats(self, Request::StatsTube(name)).await
    }

    async fn list_tubes(&mut self) -> Result<Vec<String>, Error> {
        list(self, Request::ListTubes).await
    }

    async fn list_tube_used(&mut self) -> Result<String, Error> {
        self.expect(Request::ListTubeUsed, |r| match r {
            Response::Using(t) => Some(t),
            _ => None,
        })
        .await
    }

    async fn list_tubes_watched(&mut self) -> Result<Vec<String>, Error> {
        list(self, Request::ListTubesWatched).await
    }

    async fn pause_tube(&mut self, name: &str, delay: Duration) -> Result<(), Error> {
        let tube = tube(name)?;
        let request = Request::PauseTube {
            tube,
            delay: secs(delay),
        };
        self.expect(request, |r| (r == Response::Paused).then_some(()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_go_on_the_wire_as_whole_seconds_rounded_up() {
        assert_eq!(secs(Duration::ZERO), 0);
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_millis(800)), 1);
        assert_eq!(secs(Duration::from_millis(1500)), 2);
        assert_eq!(secs(Duration::from_secs(7)), 7);
        assert_eq!(secs(Duration::MAX), u32::MAX);
        let params = PutParams {
            priority: 3,
            delay: Duration::from_millis(800),
            ttr: Duration::from_millis(1500),
        };
        assert_eq!(
            put_request("x".into(), params),
            Request::Put {
                priority: 3,
                delay: 1,
                ttr: 2,
                body: "x".into()
            }
        );
    }
}
