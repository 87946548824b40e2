import ArgumentParser
import ManxDatastore
import ManxEtcd

/// Where resources live, as every command that reads or writes them is
/// told: a directory of YAML, or etcd.
public struct DatastoreOptions: ParsableArguments {
    @Option(help: "Directory of YAML resources (the datastore), unless --etcd-endpoints is given.")
    public var datastore: String = "/etc/manx/resources"

    @Option(help: "etcd client URLs, comma-separated (e.g. http://10.0.0.1:2379,http://10.0.0.2:2379): the cluster datastore, instead of a directory.")
    public var etcdEndpoints: String?

    public init() {}

    public func open() throws -> any Datastore {
        if let etcdEndpoints { return EtcdDatastore(client: try EtcdClient(endpoints: etcdEndpoints.split(separator: ",").map(String.init))) }
        return DirectoryDatastore(directory: datastore)
    }
}
