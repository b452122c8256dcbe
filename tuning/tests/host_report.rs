//! Runs the real host report and the start-up steps on this machine and prints them
//! (`cargo test -p tuning --test host_report -- --nocapture`). Asserts only that nothing fails:
//! the values are this host's. Changes nothing on the host except this test process's limits.

use tuning::cores::{CoreList, plan};
use tuning::host::{render_json, render_table};
use tuning::limits::{GLOMMIO_MEMLOCK_MIN_BYTES, raise_memlock, raise_nofile};

#[test]
fn report_on_this_host() {
    let checks = tuning::report(100_000);
    assert!(checks.len() > 10);
    println!("{}", render_table(&checks));
    let json = render_json(&checks);
    assert!(json.starts_with("[{") && json.ends_with("}]"));
}

#[test]
fn start_up_steps_on_this_host() {
    let online = CoreList::online().expect("sched_getaffinity");
    let placement = plan(&online, &online, 2).expect("every online core can take a shard");
    println!("online {online}: {placement:?}");
    println!("{}", raise_nofile());
    println!("{}", raise_memlock(GLOMMIO_MEMLOCK_MIN_BYTES));
}
