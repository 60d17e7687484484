//! The `rapport` command line: parses arguments and hands over to the library.

use std::{path::PathBuf, process::ExitCode};

use anyhow::anyhow;
use clap::{ArgGroup, Parser, Subcommand};
use rapport::{
    audit::Verdict,
    config::Settings,
    domain::{
        contact::{ContactId, ContactRef, EmailAddress},
        import::ImportKey,
    },
    service::imports::ImportOptions,
    startup::{self, Application, ServeOptions},
    telemetry,
};

#[derive(Parser)]
#[command(
    name = "rapport",
    bin_name = "rapport",
    version,
    about = "Self-hosted customer profiles, consents and preferences"
)]
struct Cli {
    /// Settings file (TOML); RAPPORT_* environment variables override it.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrating the database first).
    Serve {
        /// Do not apply pending migrations on start.
        #[arg(long)]
        no_migrate: bool,
        /// Callers without credentials act as the owner. Never for production.
        #[arg(long)]
        insecure_dev: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL); schema.graphql in the repository is its output.
    ExportSchema,
    /// Inspect the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the people who administer Rapport.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage the master key that protects personal data.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Bring data in from files.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Print what Rapport holds on someone.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// Print everything Rapport holds on one contact as JSON (what the contactExport query returns).
    ///
    /// Name the contact by its id or by --email. Run it with the server's settings
    /// (RAPPORT_DATABASE_URL, RAPPORT_MASTER_KEY); the export is recorded in the audit log as
    /// actor system/cli.
    #[command(group(ArgGroup::new("contact").required(true).args(["id", "email"])))]
    Contact {
        /// The contact's id.
        id: Option<String>,
        /// Find the contact by email address instead.
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Import contacts from a CSV file (with a header row), creating or updating them.
    ///
    /// Columns map to fields by their header names (case, spaces and separators aside): email,
    /// externalId, phone, firstName, lastName, locale, timeZone, country, and custom fields by
    /// key. --map overrides that; a column that matches no field stops the import before it
    /// starts, unless --ignore-unknown. Empty cells leave fields as they are. Rows with a bad
    /// value are skipped and written to the report (line, column, reason); the rest are
    /// imported. Exits 0 when the file was imported, rejected rows or not; non-zero only when
    /// the import itself failed. Run it with the server's settings (RAPPORT_DATABASE_URL,
    /// RAPPORT_MASTER_KEY); the run is recorded as an import by actor system/cli.
    Contacts {
        /// The CSV file (UTF-8, comma-separated, first row the header).
        file: PathBuf,
        /// The field that finds the contact a row updates.
        #[arg(long, value_enum, default_value = "email")]
        key: KeyArg,
        /// Fill FIELD from COLUMN (repeatable); FIELD is a contact field, a custom field key
        /// (or attributes.KEY), or - to ignore the column.
        #[arg(long = "map", value_name = "COLUMN=FIELD")]
        map: Vec<String>,
        /// Skip columns that match no field instead of refusing the file.
        #[arg(long)]
        ignore_unknown: bool,
        /// Where to write the rejected rows [default: FILE with .errors.csv for .csv].
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
        /// Rows written per transaction.
        #[arg(long, default_value_t = rapport::service::imports::DEFAULT_BATCH_ROWS)]
        batch_size: usize,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KeyArg {
    Email,
    ExternalId,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every hash of the audit chain and report the first broken entry, if any.
    Verify,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin user. The password is read from standard input (without echo when it is
    /// a terminal), so that it never appears in the shell history or the process list.
    Create {
        #[arg(long)]
        email: String,
        /// owner, admin, marketer or analyst.
        #[arg(long, default_value = "owner")]
        role: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-wrap every data key with RAPPORT_MASTER_KEY, unwrapping with RAPPORT_PREVIOUS_MASTER_KEY.
    ///
    /// Start the server with the new key as RAPPORT_MASTER_KEY and the old one as
    /// RAPPORT_PREVIOUS_MASTER_KEY, then run this with the same settings. It commits batch by
    /// batch and skips keys already re-wrapped, so it can be interrupted and run again. Once it
    /// is done, unset RAPPORT_PREVIOUS_MASTER_KEY.
    Rotate {
        /// Data keys re-wrapped per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: u64,
        /// Stop after this many batches (to spread the work); run again to continue.
        #[arg(long)]
        max_batches: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::from(error)),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::ExportSchema = cli.command {
        print!("{}", startup::schema_sdl());
        return Ok(());
    }
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(&settings.log, settings.log_format);
    match cli.command {
        Command::Serve { no_migrate, insecure_dev } => {
            let options = ServeOptions { skip_migrations: no_migrate, insecure_dev, ..ServeOptions::default() };
            let shutdown = startup::shutdown_signal()?;
            Application::build(&settings, options).await?.run_until(shutdown).await
        }
        Command::Migrate => startup::migrate(&startup::connect(&settings).await?).await,
        Command::Audit { command: AuditCommand::Verify } => {
            let verdict = startup::verify_audit(&settings).await?;
            match verdict {
                Verdict::Intact { .. } => {
                    println!("{verdict}");
                    Ok(())
                }
                Verdict::Broken { .. } => anyhow::bail!("{verdict}"),
            }
        }
        Command::Admin { command: AdminCommand::Create { email, role } } => {
            let password = read_password()?;
            let user = startup::create_admin(&settings, &email, &role, &password).await?;
            println!("created {} {} ({})", user.role, user.email.as_str(), user.id);
            Ok(())
        }
        Command::Keys { command: KeysCommand::Rotate { batch_size, max_batches } } => {
            startup::rotate_keys(&settings, batch_size, max_batches).await
        }
        Command::Export { command: ExportCommand::Contact { id, email } } => {
            let reference = match (id, email) {
                (Some(id), _) => ContactRef::Id(ContactId::from_uuid(
                    uuid::Uuid::parse_str(id.trim()).map_err(|_| anyhow!("{id:?} is not a contact id"))?,
                )),
                (None, Some(email)) => {
                    ContactRef::Email(EmailAddress::parse(&email).map_err(|error| anyhow!("--email {error}"))?)
                }
                (None, None) => anyhow::bail!("name the contact by id or by --email"),
            };
            let export = startup::export_contact(&settings, &reference).await?;
            println!("{}", serde_json::to_string_pretty(&export.to_json())?);
            Ok(())
        }
        Command::Import { command: ImportCommand::Contacts { file, key, map, ignore_unknown, report, batch_size } } => {
            let key = match key {
                KeyArg::Email => ImportKey::Email,
                KeyArg::ExternalId => ImportKey::ExternalId,
            };
            let mut options = ImportOptions::new(file.display().to_string(), key);
            options.ignore_unknown = ignore_unknown;
            options.batch_rows = batch_size.max(1);
            for pair in &map {
                let (column, field) =
                    pair.rsplit_once('=').ok_or_else(|| anyhow!("--map {pair:?}: write it as COLUMN=FIELD"))?;
                options.mapping.push((column.to_owned(), field.to_owned()));
            }
            let report = report.unwrap_or_else(|| default_report_path(&file));
            let summary = startup::import_contacts(&settings, &file, options, &report).await?;
            let counts = summary.import.counts;
            let rate = counts.rows as f64 / summary.elapsed.as_secs_f64().max(0.001);
            println!(
                "imported {}: {} rows, {} created, {} updated, {} unchanged, {} rejected in {:.1} s ({rate:.0} rows/s); import {}",
                file.display(),
                counts.rows,
                counts.created,
                counts.updated,
                counts.unchanged,
                counts.rejected,
                summary.elapsed.as_secs_f64(),
                summary.import.id,
            );
            if let Some(report) = summary.report {
                println!("rejected rows: {}", report.display());
            }
            Ok(())
        }
        Command::ExportSchema => Ok(()),
    }
}

/// `contacts.csv` → `contacts.errors.csv`, beside the file.
fn default_report_path(file: &std::path::Path) -> PathBuf {
    let stem = file.file_stem().map_or_else(|| "import".into(), |stem| stem.to_string_lossy().into_owned());
    file.with_file_name(format!("{stem}.errors.csv"))
}

fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};

    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("Password: ")?);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// One line on stderr, with the chain of causes, and a failing exit code.
fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("rapport: {error:#}");
    ExitCode::FAILURE
}
