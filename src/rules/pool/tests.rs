use super::*;

fn pool(threads: usize, budget: Duration) -> RulePool {
    RulePool::new(
        PoolSize {
            threads,
            stack_bytes: 1 << 20,
        },
        budget,
    )
}

/// A job that holds its thread until `held` gets a message (or 10 s pass).
fn stuck(held: std::sync::mpsc::Receiver<()>) -> impl FnOnce() + Send + 'static {
    move || {
        let _ = held.recv_timeout(Duration::from_secs(10));
    }
}

#[tokio::test]
async fn runs_jobs_on_threads_of_its_own() {
    let pool = pool(2, Duration::from_secs(5));
    let here = std::thread::current().id();
    let name = pool
        .run(move || {
            assert_ne!(std::thread::current().id(), here);
            std::thread::current().name().map(str::to_owned)
        })
        .await;
    assert_eq!(name, Ok(Some("pollgate-rule".to_owned())));
}

#[tokio::test]
async fn a_job_past_its_budget_is_answered_overrun_and_the_pool_keeps_serving() {
    let pool = pool(1, Duration::from_millis(30));
    let (release, held) = std::sync::mpsc::channel::<()>();
    let started = Instant::now();
    let stuck = pool.run(stuck(held)).await;
    assert_eq!(stuck, Err(Overrun));
    assert!(started.elapsed() < Duration::from_secs(5));
    // The only thread is still busy with the stuck job; a replacement serves this one.
    assert_eq!(pool.run(|| 7).await, Ok(7));
    release.send(()).expect("the stuck job is still waiting");
}

#[tokio::test]
async fn a_job_whose_caller_left_before_it_started_never_runs() {
    let pool = Arc::new(pool(1, Duration::from_secs(10)));
    let (release, held) = std::sync::mpsc::channel::<()>();
    let first = pool.clone();
    let busy = tokio::spawn(async move { first.run(stuck(held)).await });
    // Wait until the first job occupies the only thread.
    let deadline = Instant::now() + Duration::from_secs(5);
    while lock(&pool.shared.state).running.is_empty() {
        assert!(Instant::now() < deadline, "the first job never started");
        tokio::task::yield_now().await;
    }
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let gone = pool.run(move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    // Polled once (queued), then dropped: the caller went away.
    let _ = tokio::time::timeout(Duration::from_millis(1), gone).await;
    release.send(()).expect("the first job is waiting");
    assert_eq!(busy.await.expect("joined"), Ok(()));
    // A later job on the same thread runs after the abandoned one would have.
    assert_eq!(pool.run(|| 1).await, Ok(1));
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test]
async fn a_job_overrunning_right_after_another_is_still_caught() {
    // The first job leaves the watchdog looking once a budget without being woken;
    // the second must still be answered once its own budget is spent.
    let pool = pool(1, Duration::from_millis(30));
    assert_eq!(pool.run(|| 1).await, Ok(1));
    let (release, held) = std::sync::mpsc::channel::<()>();
    let stuck = pool.run(stuck(held)).await;
    assert_eq!(stuck, Err(Overrun));
    release.send(()).expect("the stuck job is still waiting");
}
