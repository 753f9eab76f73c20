package local.stack.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.context.ApplicationScoped;
import javax.enterprise.inject.Produces;
import javax.inject.Singleton;

/**
 * Glue for assembling Apicurio Registry from Maven Central. Its config-index Quarkus extension has
 * a build-time part (apicurio-common-app-components-config-index-deployment) that Maven Central
 * does not serve; that part only lists the settings an admin may change at run time through the
 * registry's admin API. pom.xml leaves the extension out, and this bean stands in for its
 * output with an empty list: every setting then comes from ordinary configuration
 * (application.properties, -D flags, environment), and the registry itself is unchanged.
 */
@ApplicationScoped
public class DynamicConfigIndex {
  @Produces
  @Singleton
  DynamicConfigPropertyList dynamicConfigProperties() {
    return new DynamicConfigPropertyList(List.of());
  }
}
