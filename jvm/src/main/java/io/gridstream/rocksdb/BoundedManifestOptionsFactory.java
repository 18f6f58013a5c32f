package io.gridstream.rocksdb;

import java.util.Collection;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.state.rocksdb.ConfigurableRocksDBOptionsFactory;
import org.apache.flink.state.rocksdb.RocksDBOptionsFactory;
import org.rocksdb.ColumnFamilyOptions;
import org.rocksdb.DBOptions;

/**
 * Bounds each RocksDB instance's MANIFEST, which Flink 2.2 leaves at RocksDB's 1 GB.
 *
 * <p>RocksDB appends to an instance's MANIFEST at every flush and compaction (Flink flushes at
 * every checkpoint) and starts a new one only when the instance reopens or the file passes
 * {@code max_manifest_file_size}, which Flink does not set (RocksDB's default is 1 GB: months
 * of flushes) and no Flink key reaches. Every
 * incremental checkpoint uploads the MANIFEST whole, so without a bound a long-running job's
 * checkpoints grow with its uptime. With one, RocksDB rolls the file over (writing the live files
 * afresh) once it passes {@link #MAX_MANIFEST_FILE_SIZE}.
 *
 * <p>Set with {@code state.backend.rocksdb.options-factory:
 * io.gridstream.rocksdb.BoundedManifestOptionsFactory}; Flink's own RocksDB keys still apply,
 * this factory only adds the bound.
 */
public final class BoundedManifestOptionsFactory implements ConfigurableRocksDBOptionsFactory {
    private static final long serialVersionUID = 1L;

    /** The size past which an instance starts a new MANIFEST. */
    public static final ConfigOption<MemorySize> MAX_MANIFEST_FILE_SIZE =
            ConfigOptions.key("gridstream.rocksdb.max-manifest-file-size")
                    .memoryType()
                    .defaultValue(MemorySize.parse("64kb"))
                    .withDescription(
                            "RocksDB's max_manifest_file_size: the MANIFEST an incremental"
                                    + " checkpoint uploads whole stays about this small.");

    private long maxManifestFileSize = MAX_MANIFEST_FILE_SIZE.defaultValue().getBytes();

    @Override
    public DBOptions createDBOptions(DBOptions current, Collection<AutoCloseable> handlesToClose) {
        return current.setMaxManifestFileSize(maxManifestFileSize);
    }

    @Override
    public ColumnFamilyOptions createColumnOptions(
            ColumnFamilyOptions current, Collection<AutoCloseable> handlesToClose) {
        return current;
    }

    @Override
    public RocksDBOptionsFactory configure(ReadableConfig configuration) {
        long bytes = configuration.get(MAX_MANIFEST_FILE_SIZE).getBytes();
        if (bytes <= 0) {
            throw new IllegalArgumentException(
                    MAX_MANIFEST_FILE_SIZE.key() + " must be above zero, not " + bytes + " bytes");
        }
        maxManifestFileSize = bytes;
        return this;
    }

    @Override
    public String toString() {
        return "BoundedManifestOptionsFactory{maxManifestFileSize=" + maxManifestFileSize + "}";
    }
}
